#!/usr/bin/env bash
# Print the path of a Python >= 3.12 interpreter, or fail with a message.
# Honours $PYTHON; otherwise tries common names and pyenv installs.
set -u

ok() {
    "$1" -c 'import sys; raise SystemExit(0 if sys.version_info >= (3, 12) else 1)' >/dev/null 2>&1
}

if [ -n "${PYTHON:-}" ]; then
    if ok "$PYTHON"; then command -v "$PYTHON" || echo "$PYTHON"; exit 0; fi
    echo "error: PYTHON=$PYTHON is not a working Python >= 3.12" >&2
    exit 1
fi

candidates=(python3.13 python3.12 python3 python)
if command -v pyenv >/dev/null 2>&1; then
    root=$(pyenv root)
    for dir in "$root"/versions/3.1[2-9]*/bin "$root"/versions/3.[2-9][0-9]*/bin; do
        [ -x "$dir/python3" ] && candidates+=("$dir/python3")
    done
fi
for candidate in "${candidates[@]}"; do
    if ok "$candidate"; then command -v "$candidate"; exit 0; fi
done
echo "error: no Python >= 3.12 found (tried ${candidates[*]}); install one or set PYTHON=/path/to/python3.12" >&2
exit 1
