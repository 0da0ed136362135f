"""The mirror's eBPF programs: `asm` builds them (pure: the assembler, the programs, the
map values), `syscall` loads them and reads and writes the maps (bpf(2))."""
