#!/usr/bin/env bash
# check-docs.sh - every public function of kvblock must be documented.
#
# For each KVB_API declaration in the installed headers (include/kvblock.h and
# include/kvblock/*.h), the comment block right above it must say three things,
# as the conventions (../shared/CONVENTIONS.md, "Comments and docs") require:
#   "Thread safety:"  who may call it, and what it locks;
#   "Ownership:"      which handles it consumes or produces;
#   "Callbacks:"      which callbacks it may fire.
# (On one line or three; "none" is a fine answer.) A declaration with no comment
# block right above it fails too. Exported objects (KVB_API extern const ...
# ops tables) are not functions and are not checked.
#
# usage: tools/check-docs.sh [header ...]   (default: every installed header)
# Prints one line per offender (file:line: function: missing ...) and a summary;
# exit status 1 when there is any offender, 0 otherwise.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ $# -eq 0 ]; then
    set -- include/kvblock.h include/kvblock/*.h
fi
awk '
function reset_comment() { comment = ""; cend = -1 }
FNR == 1 { reset_comment(); in_comment = 0; pending = 0 }
{
    line = $0
    if (in_comment) {
        comment = comment "\n" line
        if (line ~ /\*\//) { in_comment = 0; cend = FNR }
        next
    }
    if (line ~ /^[ \t]*\/\*/) {
        comment = line; cstart = FNR
        if (line ~ /\*\//) { cend = FNR } else { in_comment = 1 }
        next
    }
    if (pending) {
        decl = decl " " line
        classify()
        next
    }
    if (line ~ /KVB_API/ && line !~ /^[ \t]*#/) {
        decl = line; dline = FNR; has_doc = (cend == FNR - 1)
        doc = has_doc ? comment : ""
        pending = 1
        classify()
        next
    }
    if (line !~ /^[ \t]*$/) { reset_comment() }
}
# A function once "(" comes before ";"; an exported object (";" first) is skipped.
function classify(   p, q) {
    p = index(decl, "("); q = index(decl, ";")
    if (p && (!q || p < q)) finish()
    else if (q) { pending = 0; reset_comment() }
}
function finish(   name, pre, miss) {
    pending = 0
    pre = decl; sub(/\(.*/, "", pre)
    n = split(pre, parts, /[^A-Za-z0-9_]+/)
    name = ""
    for (i = n; i >= 1; i--) if (parts[i] != "") { name = parts[i]; break }
    total++
    miss = ""
    if (doc == "") miss = "a doc comment"
    else {
        if (doc !~ /Thread safety:/) miss = miss (miss ? ", " : "") "Thread safety:"
        if (doc !~ /Ownership:/)     miss = miss (miss ? ", " : "") "Ownership:"
        if (doc !~ /Callbacks:/)     miss = miss (miss ? ", " : "") "Callbacks:"
    }
    if (miss != "") { bad++; printf "%s:%d: %s: missing %s\n", FILENAME, dline, name, miss }
    reset_comment()
}
END {
    printf "check-docs: %d public functions, %d documented, %d missing Thread safety/Ownership/Callbacks\n", total, total - bad, bad
    exit bad ? 1 : 0
}' "$@"
