# mk/docs.mk - documentation.
#
#   make docs         API reference from the header comments with Doxygen (Debian's
#                     doxygen), in $(BUILD)/docs/html/index.html; skipped with a
#                     message when doxygen is absent
#   make check-docs   tools/check-docs.sh: every KVB_API function in include/ has a
#                     doc comment with "Thread safety:", "Ownership:" and "Callbacks:"
#                     (plus a self-test: a header missing one must fail); and the C
#                     scheduler step of docs/ecosystem.md, extracted, compiled against
#                     the library (warnings are errors) and run. In CHECKS.

DOXYGEN ?= doxygen

CHECKS += check-docs
.PHONY: docs check-docs

docs:
	@if ! command -v $(DOXYGEN) >/dev/null 2>&1; then \
	    echo "docs: SKIPPED (doxygen not found: apt-get install doxygen)"; \
	else \
	    mkdir -p $(BUILD)/docs && \
	    ( cat Doxyfile; echo "OUTPUT_DIRECTORY = $(BUILD)/docs" ) | $(DOXYGEN) - && \
	    echo "docs: $(BUILD)/docs/html/index.html"; \
	fi

ECO_C := $(BUILD)/docs-example/ecosystem_step

$(ECO_C).c: docs/ecosystem.md
	@mkdir -p $(dir $@)
	sed -n '/<!-- ecosystem-c:begin -->/,/<!-- ecosystem-c:end -->/p' $< | sed '1,2d;$$d' | sed '$$d' > $@

$(ECO_C): $(ECO_C).c $(STATIC)
	$(CC) $(CPPFLAGS) -std=c11 -Wall -Wextra -Werror $(LDFLAGS) $< -o $@ $(STATIC) $(LDLIBS_LIB)

check-docs: $(ECO_C)
	@tools/check-docs.sh
	@$(ECO_C) > $(ECO_C).out || { cat $(ECO_C).out; echo "check-docs: docs/ecosystem.md C example FAILED"; exit 1; }
	@grep -q '96 from the cache' $(ECO_C).out || { cat $(ECO_C).out; \
	    echo "check-docs: docs/ecosystem.md C example printed something else"; exit 1; }
	@tmp=$$(mktemp --suffix=.h); \
	    printf '/**\n * @brief x.\n * Thread safety: any.\n * Ownership: none.\n */\nKVB_API int kvb_x(void);\n' > $$tmp; \
	    if tools/check-docs.sh $$tmp > /dev/null; then \
	        rm -f $$tmp; echo "check-docs: self-test FAILED (a missing Callbacks: line passed)"; exit 1; \
	    fi; rm -f $$tmp
