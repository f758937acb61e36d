# mk/python.mk - the Python binding (python/kvblock/, cffi in ABI mode over
# $(BUILD)/libkvblock.so.1) and its pytest suite.
#
#   make check-python   python/tests with Debian's python3-pytest and python3-cffi,
#                       against the library just built; skipped with a message when
#                       $(PYTHON) or those modules are missing. Also builds
#                       python/tests/layout.c, which prints the C struct layouts that
#                       test_layout.py compares with the binding's cffi declarations.
#
# PYTHON defaults to Debian's interpreter: a pyenv `python3` first on PATH cannot see
# Debian's dist-packages.

PYTHON ?= /usr/bin/python3
PY_LAYOUT := $(BUILD)/python/layout

CHECKS += check-python
.PHONY: check-python

$(PY_LAYOUT): python/tests/layout.c $(wildcard include/*.h include/kvblock/*.h)
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) -std=c11 -Wall -Wextra $< -o $@

check-python: $(SHARED) $(PY_LAYOUT)
	@if ! command -v $(PYTHON) >/dev/null 2>&1; then \
	    echo "check-python: SKIPPED ($(PYTHON) not found)"; \
	elif ! $(PYTHON) -c 'import cffi, pytest' 2>/dev/null; then \
	    echo "check-python: SKIPPED ($(PYTHON) lacks cffi or pytest:" \
	         "apt-get install python3-cffi python3-pytest)"; \
	else \
	    KVBLOCK_LIBRARY=$(abspath $(BUILD))/libkvblock.so.1 \
	    KVBLOCK_LAYOUT_BIN=$(abspath $(PY_LAYOUT)) PYTHONDONTWRITEBYTECODE=1 \
	    $(PYTHON) -m pytest -q -p no:cacheprovider python/tests; \
	fi
