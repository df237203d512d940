#!/usr/bin/env bash
# Builds the wasm32 SIMD kernels of the trainer (runner/moco/kernels/*.c → *.wasm). The built
# .wasm files are committed, so nothing is built at install time; rerun this after editing the C.
# Needs clang and wasm-ld (Debian: apt-get install -y clang lld).
#
# The kernels import the tfjs wasm backend's memory and must not touch anything of it but the
# buffers they are given: no data segment, no stack. The link gives them none, and the check
# below fails the build if clang ever spills to a stack (a __stack_pointer global).
set -euo pipefail
cd "$(dirname "$0")/../runner/moco/kernels"
for src in *.c; do
  name="${src%.c}"
  clang --target=wasm32 -msimd128 -O3 -nostdlib -ffreestanding -fno-builtin -Wall -Wextra -Werror -c "$src" -o "/tmp/$name.o"
  wasm-ld --no-entry --import-memory --initial-memory=65536 --strip-all --gc-sections -z stack-size=0 "/tmp/$name.o" -o "$name.wasm"
  if llvm-objdump -d "$name.wasm" | grep -q 'global\.\(get\|set\)'; then
    echo "$name.wasm uses globals (a stack): it would write into the tfjs heap" >&2
    exit 1
  fi
  echo "built runner/moco/kernels/$name.wasm ($(stat -c %s "$name.wasm") bytes)"
done
