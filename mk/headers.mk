# mk/headers.mk - every public header stands alone.
#
#   make check-headers   (in CHECKS) each of include/kvblock.h and include/kvblock/*.h
#                        is the only header of a translation unit (included twice: the
#                        include guard) and compiles as C11 with -pedantic and as
#                        C++11, warnings as errors; then tests/header_cxx.cpp (the API
#                        from C++: extern "C", kvb_release's overloads) is built against
#                        this tree's static library and run. check-install builds the
#                        same program against the installed headers and library.
#
#   make check-headers HEADER_CC=clang HEADER_CXX=clang++

HEADER_CC  ?= $(CC)
HEADER_CXX ?= c++
HEADER_FLAGS := -Wall -Wextra -Werror -Iinclude
PUBLIC_HEADERS := include/kvblock.h $(wildcard include/kvblock/*.h)

CHECKS += check-headers
.PHONY: check-headers

check-headers: lib
	@n=0; bad=0; \
	for h in $(PUBLIC_HEADERS:include/%=%); do \
	    src=$$(printf '#include <%s>\n#include <%s>\n' $$h $$h); \
	    if printf '%s\n' "$$src" | $(HEADER_CC) -std=c11 -pedantic $(HEADER_FLAGS) \
	        -fsyntax-only -x c -; then n=$$((n + 1)); \
	    else echo "check-headers: $$h alone does not compile as C"; bad=$$((bad + 1)); fi; \
	    if printf '%s\n' "$$src" | $(HEADER_CXX) -std=c++11 -pedantic $(HEADER_FLAGS) \
	        -fsyntax-only -x c++ -; then n=$$((n + 1)); \
	    else echo "check-headers: $$h alone does not compile as C++"; bad=$$((bad + 1)); fi; \
	done; \
	if $(HEADER_CXX) -std=c++11 $(HEADER_FLAGS) tests/header_cxx.cpp -o $(BUILD)/header_cxx \
	    $(STATIC) $(LDLIBS_LIB) && $(BUILD)/header_cxx; then n=$$((n + 1)); \
	else echo "check-headers: tests/header_cxx.cpp failed"; bad=$$((bad + 1)); fi; \
	echo "check-headers: $$n passed, $$bad failed"; \
	[ $$bad -eq 0 ]
