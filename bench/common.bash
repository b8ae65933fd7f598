# Sourced by every bench/*.sh: the build's tools first on PATH, a scratch
# directory $w removed at exit, and small helpers.
set -eu
: "${LORA_BUILD:?set LORA_BUILD to a build directory}"
B=$LORA_BUILD
PATH="$B/bin:$B/tests/tools:$PATH"
w=$(mktemp -d)
trap 'rm -rf "$w"' EXIT
cores=$(nproc)
# val KEY FILE: the value of a KEY=VALUE line.
val() { sed -n "s/^$1=//p" "$2"; }
