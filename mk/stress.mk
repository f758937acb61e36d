# mk/stress.mk - sizes of the torture runs (stress/torture_*.c).
#
# Every torture program takes [threads] [ops per thread] [seed]. `make stress`
# runs each one natively with LONG_ARGS: 8 threads x 1,250,000 operations =
# 10^7 operations per program (issue 4), a few seconds each. The race checkers
# (make helgrind drd tsan asan memcheck) use STRESS_ARGS, kept small for CI
# (the Makefile's default, "4 20000"); see docs/reliability.md for the measured
# time of every program under every tool.
#
# The programs share their scaffolding (command line, threads, the pool pair,
# the end-of-run check of each pool against the threads' own counts) through
# tests/support/torture.h; the Makefile's stress rule compiles them with -Itests
# and links $(BUILD)/libkvblock_support.a (tests/support/*.c).
#
#   make stress LONG_ARGS="8 12500000"     10^8 operations per program
#   make helgrind STRESS_ARGS="4 20000 1"  a fixed seed

LONG_ARGS ?= 8 1250000
