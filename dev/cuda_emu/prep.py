#!/usr/bin/env python3
"""prep.py IN.cu OUT.cpp — rewrites the CUDA-only syntax of a .cu file for dev/cuda_emu/cuda_emu.h:
kernel<<<grid, block[, shmem]>>>(args) -> emu::launcher(kernel, grid, block[, shmem])(args);
`extern __shared__ T name[];` -> a pointer to the block's dynamic shared memory; and
`__shared__ T name[N]...;` -> a static array registered with the stand-in, which fills it with garbage
before every block (as on a device, it does not start as zero or as the previous block left it)."""
import re
import sys

s = open(sys.argv[1]).read()
s = re.sub(r'extern __shared__ (\w+) (\w+)\[\];', r'\1 *\2 = (\1 *)emu_dyn_shared();', s)
s = re.sub(r'__shared__ ([\w:]+) (\w+)((?:\[[^\]]+\])*);',
           r'static \1 \2\3; static emu::shared_reg \2_emu_reg_(&\2, sizeof \2);', s)
s = re.sub(r'(\w+)<<<', r'emu::launcher(\1, ', s)
s = s.replace('>>>(', ')(')
open(sys.argv[2], 'w').write(s)
