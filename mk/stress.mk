# mk/stress.mk - sizes of the torture runs (stress/torture_*.c).
#
# Every torture program takes [threads] [ops per thread] [seed]. `make stress`
# runs each one natively with LONG_ARGS: 8 threads x 1,250,000 operations =
# 10^7 operations per program (issue 4), a few seconds each. The race checkers
# (make helgrind drd tsan asan memcheck) use STRESS_ARGS, kept small for CI
# (the Makefile's default, "4 20000"); see docs/reliability.md for the measured
# time of every program under every tool.
#
#   make stress LONG_ARGS="8 12500000"     10^8 operations per program
#   make helgrind STRESS_ARGS="4 20000 1"  a fixed seed

LONG_ARGS ?= 8 1250000
