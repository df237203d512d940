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
check_no_stack() {
  if llvm-objdump -d "$1" | grep -q 'global\.\(get\|set\)'; then
    echo "$1 uses globals (a stack): it would write into the tfjs heap" >&2
    exit 1
  fi
}
for src in *.c; do
  name="${src%.c}"
  # Plain memory: the single-threaded tfjs build.
  clang --target=wasm32 -msimd128 -O3 -nostdlib -ffreestanding -fno-builtin -Wall -Wextra -Werror -c "$src" -o "/tmp/$name.o"
  wasm-ld --no-entry --import-memory --initial-memory=65536 --strip-all --gc-sections -z stack-size=0 "/tmp/$name.o" -o "$name.wasm"
  check_no_stack "$name.wasm"
  # Shared memory (4 GiB maximum, as Emscripten declares it): the threaded tfjs build.
  clang --target=wasm32 -msimd128 -matomics -mbulk-memory -O3 -nostdlib -ffreestanding -fno-builtin -Wall -Wextra -Werror -c "$src" -o "/tmp/$name.shared.o"
  wasm-ld --no-entry --import-memory --shared-memory --initial-memory=65536 --max-memory=4294967296 --strip-all --gc-sections -z stack-size=0 "/tmp/$name.shared.o" -o "$name.shared.wasm"
  check_no_stack "$name.shared.wasm"
  echo "built runner/moco/kernels/$name.wasm ($(stat -c %s "$name.wasm") bytes), $name.shared.wasm ($(stat -c %s "$name.shared.wasm") bytes)"
done
