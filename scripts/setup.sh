#!/usr/bin/env bash
# Installs s2s_fast and everything it needs, on a fresh machine or again on a set-up one (idempotent).
# Without a GPU, torch is pinned to the CPU build 2.13.0 (an unpinned torch pulls gigabytes of CUDA packages);
# where torch is already installed (a GPU machine's CUDA build), it is kept.
# Run again with nothing changed that goes into the build (setup.py, pyproject.toml, csrc/, the Python and torch, the
# build's environment variables) and s2s_fast installed from this tree, it installs nothing: the build took about 3
# minutes on 2 cores each time, and main.sh and test.sh (and so CI) run this first.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
export PIP_ROOT_USER_ACTION=ignore PIP_DISABLE_PIP_VERSION_CHECK=1
STAMP=build/s2s_fast-setup.stamp
MESSAGES=build/s2s_fast-setup.txt

# What the last successful set-up was made from; "" when this Python has no torch yet.
build_key() {
  "$PYTHON" - <<'EOF'
import hashlib, os, pathlib, sys
try:
    import torch
except ImportError:
    sys.exit(0)
key = hashlib.sha256(f"{sys.executable}|{sys.version}|{torch.__version__}".encode())
for name in sorted(n for n in os.environ if n.startswith(("S2S_FAST_BUILD", "S2S_FAST_CUDA_ARCHS")) or n in
                   ("CXX", "CC", "CUDA_HOME", "CUDA_PATH", "MAX_JOBS")):
    key.update(f"{name}={os.environ[name]}".encode())
for path in sorted([*pathlib.Path("csrc").rglob("*"), pathlib.Path("setup.py"), pathlib.Path("pyproject.toml")]):
    if path.is_file():
        key.update(str(path).encode() + b"\0" + path.read_bytes())
print(key.hexdigest())
EOF
}

# Whether s2s_fast (with its test extras) is installed from this tree: asked as any other folder would, without the
# current one on the path (from here the source folder itself imports, installed or not).
installed_here() {
  "$PYTHON" - <<'EOF' 2>/dev/null
import importlib.util, os, sys
sys.path = [entry for entry in sys.path if entry not in ("", ".") and os.path.abspath(entry) != os.getcwd()]
spec = importlib.util.find_spec("s2s_fast")
ok = spec is not None and os.path.samefile(os.path.dirname(spec.origin), "s2s_fast")
sys.exit(0 if ok and all(importlib.util.find_spec(m) for m in ("pytest", "pytest_benchmark", "xdist")) else 1)
EOF
}

key=$(build_key)
if [ -n "$key" ] && [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$key" ] && installed_here; then
  echo "s2s_fast: already set up here (nothing that goes into the build changed since; rm $STAMP to reinstall)"
else
  if ! "$PYTHON" -c "import torch" 2>/dev/null; then
    "$PYTHON" -m pip install -q torch==2.13.0
  fi
  "$PYTHON" -m pip install -q --upgrade "setuptools>=64" wheel ninja pybind11
  rm -f "$STAMP" "$MESSAGES"
  echo "s2s_fast: installing (the C++ extensions take a few minutes to compile; pip shows nothing meanwhile)"
  "$PYTHON" -m pip install -q --no-build-isolation -e ".[test]"
  if [ -f "$MESSAGES" ]; then cat "$MESSAGES"; fi
  mkdir -p build
  build_key > "$STAMP"
fi
"$PYTHON" -c "import importlib.util as u; print('s2s_fast: CUDA extension', 'built' if u.find_spec('s2s_fast._C') else 'not built', '| CUDA emulation', 'built' if u.find_spec('s2s_fast._C_emulated') else 'not built', '| cpu kernels', 'built' if u.find_spec('s2s_fast._cpu') else 'not built')"
