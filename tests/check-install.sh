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
if ldd "$tmp/static" 2>&1 | grep libkvblock >/dev/null; then echo "static build links libkvblock.so"; exit 1; fi
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
# CMake: find_package(kvblock) through the installed lib/cmake/kvblock/kvblockConfig.cmake,
# the quickstart linked with kvblock::kvblock (shared) and kvblock::kvblock_static; a
# request for another major version must fail. Skipped with a message without cmake.
if command -v cmake >/dev/null 2>&1; then
    mkdir -p "$tmp/cmake"
    cp examples/quickstart.c "$tmp/cmake/"
    cat > "$tmp/cmake/CMakeLists.txt" <<'CMAKE'
cmake_minimum_required(VERSION 3.13)
project(kvblock_quickstart C)
find_package(kvblock 1.0 REQUIRED)
add_executable(quickstart_shared quickstart.c)
target_link_libraries(quickstart_shared PRIVATE kvblock::kvblock)
add_executable(quickstart_static quickstart.c)
target_link_libraries(quickstart_static PRIVATE kvblock::kvblock_static)
set_target_properties(quickstart_shared quickstart_static PROPERTIES C_STANDARD 11)
target_compile_options(quickstart_shared PRIVATE -Wall -Wextra -Werror)
target_compile_options(quickstart_static PRIVATE -Wall -Wextra -Werror)
CMAKE
    cmake -S "$tmp/cmake" -B "$tmp/cmake/build" -DCMAKE_C_COMPILER="$CC" \
        -DCMAKE_PREFIX_PATH="$tmp/prefix" >"$tmp/cmake.log" 2>&1 \
        || { cat "$tmp/cmake.log"; echo "cmake: configure with find_package(kvblock) failed"; exit 1; }
    cmake --build "$tmp/cmake/build" >>"$tmp/cmake.log" 2>&1 \
        || { cat "$tmp/cmake.log"; echo "cmake: build failed"; exit 1; }
    "$tmp/cmake/build/quickstart_shared" >/dev/null   # the imported target's RPATH
    "$tmp/cmake/build/quickstart_static" >/dev/null
    case "$(ldd "$tmp/cmake/build/quickstart_static")" in
    *libkvblock*) echo "cmake: kvblock::kvblock_static links libkvblock.so"; exit 1 ;;
    esac
    deps=$(ldd "$tmp/cmake/build/quickstart_shared")   # (no ldd | grep -q: SIGPIPE under pipefail)
    case "$deps" in
    *"libkvblock.so.1 => $tmp/prefix/lib/"*) ;;
    *) echo "$deps"; echo "cmake: kvblock::kvblock does not link the installed libkvblock.so.1"; exit 1 ;;
    esac
    sed -i 's/find_package(kvblock 1.0 REQUIRED)/find_package(kvblock 2.0 REQUIRED)/' "$tmp/cmake/CMakeLists.txt"
    if cmake -S "$tmp/cmake" -B "$tmp/cmake/build2" -DCMAKE_PREFIX_PATH="$tmp/prefix" >/dev/null 2>&1; then
        echo "cmake: find_package(kvblock 2.0) accepted version 1"; exit 1
    fi
    echo "check-install: cmake find_package(kvblock): shared and static quickstart built and run"
else
    echo "check-install: cmake part SKIPPED (cmake not found: apt-get install cmake)"
fi
echo "check-install: 1 passed, 0 failed"
