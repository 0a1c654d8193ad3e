#!/usr/bin/env bash
# The peer engines of bench_peers.py, in their own venv (benchmark-only: never in the project's
# dependencies, never in the main .venv):
#   - llama.cpp through llama-cpp-python, built from its PyPI sdist for the CPU at hand;
#   - the GGUF converter of the llama.cpp that sdist vendors (convert_hf_to_gguf.py) and gguf;
#   - CTranslate2 (wheel) and its ct2-transformers-converter;
#   - torch (CPU) + transformers, which both converters import to read the checkpoint.
# Usage: bash benchmarks/setup_peers.sh [VENV]   (default benchmarks/.venv-peers; git-ignored)
# Re-running rebuilds llama-cpp-python: do it when the machine's CPU changes (lscpu).
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
VENV="${1:-$HERE/.venv-peers}"
LLAMA_VERSION="${LLAMA_VERSION:-0.3.36}"
CT2_VERSION="${CT2_VERSION:-4.8.5}"

python3 -m venv "$VENV"
# shellcheck disable=SC1091
. "$VENV/bin/activate"
pip install -q --upgrade pip
# The converters' imports. torch: the CPU build (the local wheel when pip's find-links has it).
pip install -q "torch==2.13.0" "transformers==4.57.6" "ctranslate2==$CT2_VERSION" numpy \
    sentencepiece safetensors pyyaml tqdm tokenizers

# The sdist is kept under the venv: its vendored llama.cpp holds the converter that matches the
# library's GGUF reader.
SRC="$VENV/src"
mkdir -p "$SRC"
if [ ! -d "$SRC/llama_cpp_python-$LLAMA_VERSION" ]; then
    pip download -q --no-deps --no-binary :all: "llama-cpp-python==$LLAMA_VERSION" -d "$SRC"
    tar xzf "$SRC/llama_cpp_python-$LLAMA_VERSION.tar.gz" -C "$SRC"
fi
SDIST="$SRC/llama_cpp_python-$LLAMA_VERSION"
# gguf from the same llama.cpp as the converter (PyPI's gguf lags the converter's constants).
pip install -q "$SDIST/vendor/llama.cpp/gguf-py"

# The ISA from this CPU's flags, not -march=native: on an AMX-class Xeon under KVM, llama.cpp built
# native segfaults in its AMX kernels on the first eval (FACTS.md, 2026-12-07), so AMX stays off.
flags=" $(grep -m1 '^flags' /proc/cpuinfo | cut -d: -f2) "
on() { case "$flags" in *" $1 "*) echo ON ;; *) echo OFF ;; esac; }
CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF"
CMAKE_ARGS+=" -DGGML_AVX=$(on avx) -DGGML_AVX2=$(on avx2) -DGGML_FMA=$(on fma)"
CMAKE_ARGS+=" -DGGML_F16C=$(on f16c) -DGGML_BMI2=$(on bmi2) -DGGML_AVX_VNNI=$(on avx_vnni)"
CMAKE_ARGS+=" -DGGML_AVX512=$(on avx512f) -DGGML_AVX512_VBMI=$(on avx512vbmi)"
CMAKE_ARGS+=" -DGGML_AVX512_VNNI=$(on avx512_vnni) -DGGML_AVX512_BF16=$(on avx512_bf16)"
CMAKE_ARGS+=" -DGGML_BLAS=OFF -DLLAMA_CURL=OFF"
export CMAKE_ARGS CMAKE_BUILD_PARALLEL_LEVEL="${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)}"
echo "CMAKE_ARGS=$CMAKE_ARGS" | tee "$VENV/llama-cmake-args.txt"
pip install -v --no-cache-dir --force-reinstall --no-deps "$SDIST" 2>&1 | tail -5
pip install -q "diskcache>=5.6.1" "jinja2>=2.11.3" "typing-extensions>=4.5.0"
python -c "import llama_cpp, ctranslate2; print('llama_cpp', llama_cpp.__version__, \
'ctranslate2', ctranslate2.__version__); print(llama_cpp.llama_print_system_info().decode())"
