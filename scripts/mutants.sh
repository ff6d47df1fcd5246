#!/bin/sh
# The mutation run behind `make mutants` (docs/mutants.md): mutmut, configured in pyproject.toml's
# [tool.mutmut], over a copy of the tree in .cache/mutants/ (mutmut writes its mutants/ directory
# into its working directory, and the checkout must stay clean). Arguments, if any, are mutmut
# mutant-name patterns: `scripts/mutants.sh 'turngate.core.*'` runs the core only.
# Reruns are incremental: mutmut keeps each mutant's verdict until its function changes.
set -eu
here=$(cd "$(dirname "$0")/.." && pwd)
venv="$here/.cache/venv-mutants"
work="$here/.cache/mutants"
jobs="${MUTANTS_JOBS:-2}"

mkdir -p "$work"
# The tree mutmut mutates and tests: the sources, the tests, the config. Nothing else.
rm -rf "$work/src" "$work/tests"
cp -R "$here/src" "$here/tests" "$here/pyproject.toml" "$work/"
find "$work/src" "$work/tests" -name __pycache__ -prune -exec rm -rf {} +

cd "$work"
start=$(date +%s)
status=0
"$venv/bin/mutmut" run --max-children "$jobs" "$@" || status=$?
end=$(date +%s)
"$venv/bin/python" "$here/scripts/mutants_score.py" "$((end - start))"
exit "$status"
