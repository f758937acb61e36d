# mk/python.mk - the Python binding (python/kvblock/, cffi in ABI mode over
# $(BUILD)/libkvblock.so.1) and its pytest suite.
#
#   make check-python   python/tests with Debian's python3-pytest and python3-cffi,
#                       against the library just built; skipped with a message when
#                       $(PYTHON) or those modules are missing. Also builds
#                       python/tests/layout.c, which prints the C struct layouts that
#                       test_layout.py compares with the binding's cffi declarations.
#
# python/tests/test_fleet_client.py runs the kvb-indexer daemon: KVBLOCK_INDEXER_BIN
# names $(BUILD)/tools/kvb-indexer, and check-python builds it first when mk/indexer.mk
# says it is buildable (INDEXER_WHY empty); otherwise those tests skip with a message.
#
# PYTHON defaults to Debian's interpreter: a pyenv `python3` first on PATH cannot see
# Debian's dist-packages.

PYTHON ?= /usr/bin/python3
PY_LAYOUT := $(BUILD)/python/layout
PY_INDEXER := $(BUILD)/tools/kvb-indexer
PY_INDEXER_DEP :=
ifneq ($(wildcard mk/indexer.mk),)
ifeq ($(INDEXER_WHY),)
ifneq ($(filter tools/kvb-indexer.c,$(TOOL_SRCS)),)
PY_INDEXER_DEP := $(PY_INDEXER)
endif
endif
endif

CHECKS += check-python
.PHONY: check-python

$(PY_LAYOUT): python/tests/layout.c $(wildcard include/*.h include/kvblock/*.h)
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) -std=c11 -Wall -Wextra $< -o $@

check-python: $(SHARED) $(PY_LAYOUT) $(PY_INDEXER_DEP)
	@if ! command -v $(PYTHON) >/dev/null 2>&1; then \
	    echo "check-python: SKIPPED ($(PYTHON) not found)"; \
	elif ! $(PYTHON) -c 'import cffi, pytest' 2>/dev/null; then \
	    echo "check-python: SKIPPED ($(PYTHON) lacks cffi or pytest:" \
	         "apt-get install python3-cffi python3-pytest)"; \
	else \
	    KVBLOCK_LIBRARY=$(abspath $(BUILD))/libkvblock.so.1 \
	    KVBLOCK_LAYOUT_BIN=$(abspath $(PY_LAYOUT)) PYTHONDONTWRITEBYTECODE=1 \
	    KVBLOCK_INDEXER_BIN=$(abspath $(PY_INDEXER)) \
	    $(PYTHON) -m pytest -q -p no:cacheprovider python/tests; \
	fi
