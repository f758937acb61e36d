#!/usr/bin/env bash
# Install into a temporary prefix, then build examples/quickstart.c the way a
# user would: `cc app.c $(pkg-config --cflags --libs kvblock)` (shared) and with
# `pkg-config --static` (static), run both, and check that libkvblock.so only
# exports kvb_ symbols and carries the SONAME libkvblock.so.1.
set -euo pipefail
BUILD=${BUILD:-build}
CC=${CC:-cc}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# The README's API tour is examples/quickstart.c, verbatim.
sed -n '/<!-- quickstart:begin -->/,/<!-- quickstart:end -->/p' README.md | sed '1,2d;$d' | sed '$d' \
    > "$tmp/readme.c"
diff -u examples/quickstart.c "$tmp/readme.c" >&2 || { echo "README example differs from examples/quickstart.c"; exit 1; }
make -s BUILD="$BUILD" install PREFIX="$tmp/prefix" >/dev/null
export PKG_CONFIG_PATH="$tmp/prefix/lib/pkgconfig"
$CC -std=c11 -Wall -Wextra -Werror examples/quickstart.c -o "$tmp/shared" $(pkg-config --cflags --libs kvblock)
LD_LIBRARY_PATH="$tmp/prefix/lib" "$tmp/shared" >/dev/null
$CC -std=c11 -Wall -Wextra -Werror examples/quickstart.c -o "$tmp/static" -static-libgcc \
    $(pkg-config --cflags kvblock) "$tmp/prefix/lib/libkvblock.a" $(pkg-config --static --libs-only-l kvblock | sed 's/-lkvblock//')
"$tmp/static" >/dev/null
if ldd "$tmp/static" | grep -q libkvblock; then echo "static build links libkvblock.so"; exit 1; fi
$CC -std=c11 -Wall -Wextra -Werror examples/quickstart.c -o "$tmp/static2" \
    $(pkg-config --cflags kvblock) -Wl,-Bstatic $(pkg-config --static --libs kvblock | sed 's/-lkvblock /-lkvblock -Wl,-Bdynamic /')
"$tmp/static2" >/dev/null
soname=$(objdump -p "$tmp/prefix/lib/libkvblock.so" | awk '/SONAME/ {print $2}')
[ "$soname" = "libkvblock.so.1" ] || { echo "SONAME is '$soname'"; exit 1; }
bad=$(nm -D --defined-only "$tmp/prefix/lib/libkvblock.so" | awk '$2 ~ /[TDBR]/ {print $3}' | grep -v '^kvb_' || true)
[ -z "$bad" ] || { echo "non-kvb_ symbols exported:"; echo "$bad"; exit 1; }
if nm -D --defined-only "$tmp/prefix/lib/libkvblock.so" | awk '{print $3}' | grep -q '^kvb__'; then
    echo "private kvb__ symbols exported"; exit 1
fi
# The header alone compiles as strict C11 and as C++.
echo '#include <kvblock.h>' | $CC -std=c11 -pedantic -Wall -Wextra -Werror -fsyntax-only -x c - $(pkg-config --cflags kvblock)
${CXX:-c++} -std=c++11 -Wall -Wextra -Werror tests/header_cxx.cpp -o "$tmp/cxx" $(pkg-config --cflags --libs kvblock)
LD_LIBRARY_PATH="$tmp/prefix/lib" "$tmp/cxx"
echo "check-install: 1 passed, 0 failed"
