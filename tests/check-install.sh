#!/usr/bin/env bash
# Install kvblock and build examples/quickstart.c the way the README tells a user to:
# the command lines between <!-- check-install:begin --> and <!-- check-install:end -->
# in README.md run as written (make install into $HOME/.local, PKG_CONFIG_PATH, the
# shared build with its rpath and the static one, each binary run), with HOME a
# temporary directory, PKG_CONFIG_PATH and LD_LIBRARY_PATH unset, app.c a copy of
# examples/quickstart.c in an empty directory, and `make` run in this tree (as the
# README says: `make install` here, the rest in your project). Any failing README
# command fails the check. Then: the shared binary loads the installed
# libkvblock.so.1 without LD_LIBRARY_PATH, the static one does not link it, the
# library exports only kvb_ symbols and carries the SONAME libkvblock.so.1, the
# headers compile as C11 and C++, and CMake's find_package(kvblock) works.
set -euo pipefail
BUILD=${BUILD:-build}
CC=${CC:-cc}
export BUILD
root=$(pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# The README's API tour is examples/quickstart.c, verbatim.
sed -n '/<!-- quickstart:begin -->/,/<!-- quickstart:end -->/p' README.md | sed '1,2d;$d' | sed '$d' \
    > "$tmp/readme.c"
diff -u examples/quickstart.c "$tmp/readme.c" >&2 || { echo "README example differs from examples/quickstart.c"; exit 1; }

# The README's install and build commands, as written.
sed -n '/<!-- check-install:begin -->/,/<!-- check-install:end -->/p' README.md \
    | sed '1,2d;$d' | sed '$d' > "$tmp/readme-commands.sh"
grep -q '^make install' "$tmp/readme-commands.sh" && grep -q '^cc ' "$tmp/readme-commands.sh" \
    || { echo "check-install: no install/build commands between the check-install markers in README.md"; exit 1; }
mkdir -p "$tmp/home" "$tmp/app"
cp examples/quickstart.c "$tmp/app/app.c"
{
    echo 'set -euxo pipefail'
    echo 'make() { command make -C "$KVB_SOURCE_TREE" "$@"; }  # `make install` in the kvblock tree'
    cat "$tmp/readme-commands.sh"
} > "$tmp/run-readme.sh"
if ! (cd "$tmp/app" && env -u PKG_CONFIG_PATH -u LD_LIBRARY_PATH HOME="$tmp/home" \
    KVB_SOURCE_TREE="$root" bash "$tmp/run-readme.sh") > "$tmp/readme.log" 2>&1; then
    cat "$tmp/readme.log"
    echo "check-install: a README command failed (README.md, between the check-install markers)"
    exit 1
fi
prefix="$tmp/home/.local"
[ -f "$prefix/lib/pkgconfig/kvblock.pc" ] || { echo "check-install: the README's make install did not install into \$HOME/.local"; exit 1; }
for bin in app app_static; do
    [ -x "$tmp/app/$bin" ] || { echo "check-install: the README commands did not build $bin"; exit 1; }
    env -u LD_LIBRARY_PATH "$tmp/app/$bin" >/dev/null || { echo "check-install: $bin failed"; exit 1; }
done
deps=$(env -u LD_LIBRARY_PATH ldd "$tmp/app/app")   # (no ldd | grep -q: SIGPIPE under pipefail)
case "$deps" in
*"libkvblock.so.1 => $prefix/lib/"*) ;;
*) echo "$deps"; echo "check-install: the README's shared build does not load $prefix/lib/libkvblock.so.1"; exit 1 ;;
esac
case "$(ldd "$tmp/app/app_static" 2>&1)" in
*libkvblock*) echo "check-install: the README's static build links libkvblock.so"; exit 1 ;;
esac
echo "check-install: the README's install and build commands ran as written (shared + static quickstart)"

export PKG_CONFIG_PATH="$prefix/lib/pkgconfig"
soname=$(objdump -p "$prefix/lib/libkvblock.so" | awk '/SONAME/ {print $2}')
[ "$soname" = "libkvblock.so.1" ] || { echo "SONAME is '$soname'"; exit 1; }
bad=$(nm -D --defined-only "$prefix/lib/libkvblock.so" | awk '$2 ~ /[TDBR]/ {print $3}' | grep -v '^kvb_' || true)
[ -z "$bad" ] || { echo "non-kvb_ symbols exported:"; echo "$bad"; exit 1; }
if nm -D --defined-only "$prefix/lib/libkvblock.so" | awk '{print $3}' | grep -q '^kvb__'; then
    echo "private kvb__ symbols exported"; exit 1
fi
# The header alone compiles as strict C11 and as C++.
echo '#include <kvblock.h>' | $CC -std=c11 -pedantic -Wall -Wextra -Werror -fsyntax-only -x c - $(pkg-config --cflags kvblock)
${CXX:-c++} -std=c++11 -Wall -Wextra -Werror tests/header_cxx.cpp -o "$tmp/cxx" $(pkg-config --cflags --libs kvblock)
LD_LIBRARY_PATH="$prefix/lib" "$tmp/cxx"
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
        -DCMAKE_PREFIX_PATH="$prefix" >"$tmp/cmake.log" 2>&1 \
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
    *"libkvblock.so.1 => $prefix/lib/"*) ;;
    *) echo "$deps"; echo "cmake: kvblock::kvblock does not link the installed libkvblock.so.1"; exit 1 ;;
    esac
    sed -i 's/find_package(kvblock 1.0 REQUIRED)/find_package(kvblock 2.0 REQUIRED)/' "$tmp/cmake/CMakeLists.txt"
    if cmake -S "$tmp/cmake" -B "$tmp/cmake/build2" -DCMAKE_PREFIX_PATH="$prefix" >/dev/null 2>&1; then
        echo "cmake: find_package(kvblock 2.0) accepted version 1"; exit 1
    fi
    echo "check-install: cmake find_package(kvblock): shared and static quickstart built and run"
else
    echo "check-install: cmake part SKIPPED (cmake not found: apt-get install cmake)"
fi
echo "check-install: 1 passed, 0 failed"
