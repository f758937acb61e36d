# mk/bindings.mk - the Rust and Go bindings (bindings/), the pip-installable Python
# package (python/pyproject.toml) and their checks; bindings/README.md documents them.
#
#   make check-rust      cargo test --offline of bindings/rust (kvblock-sys + kvblock)
#                        with Debian's /usr/bin/cargo and /usr/bin/rustc (not a rustup
#                        toolchain first on PATH), linked against $(BUILD)/libkvblock.so
#                        (KVBLOCK_LIB_DIR); WERROR=1 adds -D warnings.
#   make check-go        go test of bindings/go/kvblock (cgo, `#cgo pkg-config: kvblock`)
#                        against a copy installed in $(BUILD)/bind-prefix, offline
#                        (GOPROXY=off; GOCACHE and GOPATH under $(BUILD)), with
#                        GODEBUG=cgocheck=2; plus a gofmt check.
#   make check-pip       pip installs python/ (and its wheel) into fresh venvs
#                        (--system-site-packages: Debian's setuptools, cffi, pytest;
#                        --no-build-isolation --no-index: offline) and runs python/tests
#                        from a directory without the source tree, the library found
#                        through pkg-config only.
#   make bench-bindings  the overhead figures of bindings/README.md: match + release of a
#                        cached 16-block prefix, ns per block, C and each binding.
#
# Each check says SKIPPED, with the Debian package to install, only when its toolchain
# is missing (.ci/deps installs them all).

BIND_CARGO   ?= /usr/bin/cargo
BIND_RUSTC   ?= /usr/bin/rustc
BIND_RUSTDOC ?= /usr/bin/rustdoc
BIND_GO      ?= /usr/bin/go
BIND_GOFMT   ?= /usr/bin/gofmt
BIND_PYTHON  ?= /usr/bin/python3
BIND_ITERS   ?= 200000

BIND_BUILD  = $(abspath $(BUILD))
BIND_PREFIX = $(BIND_BUILD)/bind-prefix
BIND_PC     = $(BUILD)/bind-prefix/lib/pkgconfig/kvblock.pc
BIND_LAYOUT = $(if $(wildcard mk/python.mk),$(BUILD)/python/layout)

CHECKS += check-rust check-go check-pip
.PHONY: check-rust check-go check-pip bench-bindings

# An installed copy for the Go and pip checks (lib is phony: reinstalled every run).
$(BIND_PC): lib
	@$(MAKE) -s BUILD=$(BUILD) install PREFIX=$(BIND_PREFIX) >/dev/null

BIND_CARGO_ENV = PATH=/usr/bin:$$PATH RUSTC=$(BIND_RUSTC) RUSTDOC=$(BIND_RUSTDOC) \
    CARGO_HOME=$(BIND_BUILD)/cargo-home CARGO_TARGET_DIR=$(BIND_BUILD)/rust \
    KVBLOCK_LIB_DIR=$(BIND_BUILD) LD_LIBRARY_PATH=$(BIND_BUILD) CC=$(CC) \
    $(if $(filter 1,$(WERROR)),RUSTFLAGS=-Dwarnings RUSTDOCFLAGS=-Dwarnings)

check-rust: lib
	@if [ ! -x $(BIND_CARGO) ] || [ ! -x $(BIND_RUSTC) ]; then \
	    echo "check-rust: SKIPPED ($(BIND_CARGO) or $(BIND_RUSTC) not found: apt-get install cargo rustc)"; \
	else \
	    log=$(BIND_BUILD)/check-rust.log; \
	    if (cd bindings/rust && $(BIND_CARGO_ENV) $(BIND_CARGO) test --offline --locked) >$$log 2>&1; then \
	        grep -E '^(warning|     Running|   Doc-tests)|^test result' $$log; \
	        awk '/^test result/ {p += $$4; f += $$6} END {printf "check-rust: %d passed, %d failed\n", p, f}' $$log; \
	    else cat $$log; echo "check-rust: FAILED"; exit 1; fi; \
	fi

BIND_GO_ENV = PKG_CONFIG_PATH=$(BIND_PREFIX)/lib/pkgconfig LD_LIBRARY_PATH=$(BIND_PREFIX)/lib \
    GOCACHE=$(BIND_BUILD)/go-cache GOPATH=$(BIND_BUILD)/gopath GOPROXY=off GOFLAGS= \
    GOTOOLCHAIN=local CC=$(CC)

check-go: $(BIND_PC)
	@if [ ! -x $(BIND_GO) ]; then \
	    echo "check-go: SKIPPED ($(BIND_GO) not found: apt-get install golang-go)"; \
	else \
	    bad=$$($(BIND_GOFMT) -l bindings/go); \
	    if [ -n "$$bad" ]; then echo "check-go: not gofmt-formatted: $$bad"; exit 1; fi; \
	    log=$(BIND_BUILD)/check-go.log; \
	    if (cd bindings/go/kvblock && $(BIND_GO_ENV) GODEBUG=cgocheck=2 $(BIND_GO) test -count=1 -v .) >$$log 2>&1; then \
	        grep -E '^(--- |ok|PASS|FAIL)|leak' $$log; \
	        echo "check-go: $$(grep -c -- '^--- PASS' $$log) passed, $$(grep -c -- '^--- FAIL' $$log) failed, $$(grep -c -- '^--- SKIP' $$log) skipped"; \
	    else cat $$log; echo "check-go: FAILED"; exit 1; fi; \
	fi

BIND_PIP = $(BIND_BUILD)/pip
BIND_PIP_ENV = env -u KVBLOCK_LIBRARY -u PYTHONPATH -u LD_LIBRARY_PATH \
    PKG_CONFIG_PATH=$(BIND_PREFIX)/lib/pkgconfig PYTHONDONTWRITEBYTECODE=1 PIP_NO_INPUT=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

check-pip: $(BIND_PC) $(BIND_LAYOUT)
	@if [ ! -x $(BIND_PYTHON) ]; then \
	    echo "check-pip: SKIPPED ($(BIND_PYTHON) not found: apt-get install python3)"; \
	elif ! missing=$$($(BIND_PYTHON) -c 'import importlib.util as u; \
	        m = [p for m, p in (("venv", "python3-venv"), ("ensurepip", "python3-venv"), \
	             ("pip", "python3-pip"), ("setuptools", "python3-setuptools"), \
	             ("cffi", "python3-cffi"), ("pytest", "python3-pytest")) if not u.find_spec(m)]; \
	        print(" ".join(sorted(set(m)))); exit(1 if m else 0)'); then \
	    echo "check-pip: SKIPPED (missing Debian packages: $$missing)"; \
	else \
	    set -e; rm -rf $(BIND_PIP); mkdir -p $(BIND_PIP)/src $(BIND_PIP)/t/python $(BIND_PIP)/t/docs; \
	    cp -r python/pyproject.toml python/kvblock $(BIND_PIP)/src/; \
	    cp -r python/tests python/examples $(BIND_PIP)/t/python/; \
	    cp docs/ecosystem.md $(BIND_PIP)/t/docs/; \
	    find $(BIND_PIP) -name __pycache__ -prune -exec rm -rf {} +; \
	    echo "check-pip: pip install ./python into a venv"; \
	    $(BIND_PYTHON) -m venv --system-site-packages $(BIND_PIP)/venv; \
	    $(BIND_PIP_ENV) $(BIND_PIP)/venv/bin/pip install -q --no-build-isolation --no-index $(BIND_PIP)/src; \
	    echo "check-pip: pip wheel ./python, installed into a second venv"; \
	    $(BIND_PIP_ENV) $(BIND_PIP)/venv/bin/pip wheel -q --no-build-isolation --no-index --no-deps \
	        -w $(BIND_PIP)/dist $(BIND_PIP)/src; \
	    $(BIND_PYTHON) -m venv --system-site-packages --without-pip $(BIND_PIP)/venv2; \
	    $(BIND_PIP_ENV) $(BIND_PIP)/venv2/bin/python -m pip install -q --no-index --no-deps \
	        $(BIND_PIP)/dist/kvblock-*-py3-none-any.whl; \
	    for v in venv venv2; do \
	        (cd $(BIND_PIP)/t && $(BIND_PIP_ENV) $(BIND_PIP)/$$v/bin/python -c 'import kvblock, sys; \
	            want = sys.argv[1]; \
	            assert kvblock.__file__.startswith(sys.argv[2]), kvblock.__file__; \
	            assert kvblock.LIBRARY_PATH == want, (kvblock.LIBRARY_PATH, want); \
	            print("check-pip: %s: kvblock from %s, library %s" % (sys.argv[3], kvblock.__file__, kvblock.LIBRARY_PATH))' \
	            $(BIND_PREFIX)/lib/libkvblock.so.1 $(BIND_PIP)/$$v/lib $$v); \
	    done; \
	    (cd $(BIND_PIP)/t && $(BIND_PIP_ENV) PKG_CONFIG=false LD_LIBRARY_PATH=$(BIND_PREFIX)/lib \
	        $(BIND_PIP)/venv2/bin/python -c 'import kvblock; \
	        print("check-pip: without pkg-config: library", kvblock.LIBRARY_PATH); \
	        p = kvblock.Pool(8); p.close()'); \
	    sed -n '/<!-- pip-example:begin -->/,/<!-- pip-example:end -->/p' bindings/README.md \
	        | sed '1,2d;$$d' | sed '$$d' > $(BIND_PIP)/t/example.py; \
	    (cd $(BIND_PIP)/t && $(BIND_PIP_ENV) $(BIND_PIP)/venv/bin/python example.py) > $(BIND_PIP)/example.out; \
	    grep -q '^6 cached blocks the second time$$' $(BIND_PIP)/example.out \
	        || { cat $(BIND_PIP)/example.out; echo "check-pip: the README example did not print what it should"; exit 1; }; \
	    echo "check-pip: the README example (bindings/README.md) ran: $$(tr '\n' ' ' < $(BIND_PIP)/example.out)"; \
	    cd $(BIND_PIP)/t; \
	    if $(BIND_PIP_ENV) $(if $(BIND_LAYOUT),KVBLOCK_LAYOUT_BIN=$(abspath $(BIND_LAYOUT))) \
	        $(BIND_PIP)/venv2/bin/python -m pytest -q -p no:cacheprovider python/tests \
	        >$(BIND_PIP)/pytest.log 2>&1; then \
	        tail -1 $(BIND_PIP)/pytest.log | sed 's/^/check-pip: python\/tests against the installed wheel: /'; \
	    else cat $(BIND_PIP)/pytest.log; echo "check-pip: FAILED"; exit 1; fi; \
	fi

# The overhead figures of bindings/README.md (load average printed with them).
bench-bindings: lib $(BIND_PC)
	@$(CC) -O2 -std=c11 -Wall -Wextra -Iinclude bindings/bench/match16.c -o $(BUILD)/match16 \
	    -L$(BUILD) -lkvblock
	@(cd bindings/rust && $(BIND_CARGO_ENV) $(BIND_CARGO) build -q --offline --locked --release --example bench)
	@echo "load average: $$(cut -d' ' -f1-3 /proc/loadavg)"
	@LD_LIBRARY_PATH=$(BUILD) $(BUILD)/match16 $(BIND_ITERS)
	@LD_LIBRARY_PATH=$(BUILD) $(BIND_BUILD)/rust/release/examples/bench $(BIND_ITERS)
	@cd bindings/go/kvblock && $(BIND_GO_ENV) KVBLOCK_BENCH=$(BIND_ITERS) \
	    $(BIND_GO) test -v -count=1 -run TestOverheadReport . | grep 'ns per block'
	@KVBLOCK_LIBRARY=$(BIND_BUILD)/libkvblock.so.1 PYTHONPATH=python $(BIND_PYTHON) \
	    bindings/bench/match16.py $$(( $(BIND_ITERS) / 4 ))
	@LD_LIBRARY_PATH=$(BUILD) $(BUILD)/match16 $(BIND_ITERS)
	@echo "load average: $$(cut -d' ' -f1-3 /proc/loadavg)"
