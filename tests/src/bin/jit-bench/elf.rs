//! The program the `exec` loop runs.

/// The smallest program that can be exec'd: a static x86-64 ELF of 129 bytes, the ELF header
/// (64 bytes) and one `PT_LOAD` program header (56 bytes) mapping the whole file read+execute at
/// `0x40_0000`, then the code at the entry point `0x40_0078`: `mov eax, 60` (exit), `xor edi, edi`
/// (status 0), `syscall`. No interpreter, no libc, one page: the exec loop times the kernel's
/// exec and exit paths (where jit's `bprm_check_security` program runs), not a dynamic loader.
pub const EXIT0: [u8; 129] = exit0();

const fn exit0() -> [u8; 129] {
    const BASE: u64 = 0x40_0000;
    const HEADERS: u64 = 64 + 56;
    const CODE: [u8; 9] = [0xb8, 60, 0, 0, 0, 0x31, 0xff, 0x0f, 0x05];
    const SIZE: u64 = HEADERS + CODE.len() as u64;
    let mut elf = [0u8; 129];
    let mut at = 0;
    // Appends `bytes` at `at`: a const fn cannot use slice methods.
    macro_rules! put {
        ($bytes:expr) => {{
            let bytes = $bytes;
            let mut i = 0;
            while i < bytes.len() {
                elf[at] = bytes[i];
                at += 1;
                i += 1;
            }
        }};
    }
    // e_ident: magic, 64-bit, little-endian, ELF version 1, System V ABI, padding.
    put!([0x7f, b'E', b'L', b'F', 2, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    put!(2u16.to_le_bytes()); // e_type: ET_EXEC
    put!(62u16.to_le_bytes()); // e_machine: EM_X86_64
    put!(1u32.to_le_bytes()); // e_version
    put!((BASE + HEADERS).to_le_bytes()); // e_entry: the code right after the headers
    put!(64u64.to_le_bytes()); // e_phoff: the program header right after the ELF header
    put!(0u64.to_le_bytes()); // e_shoff: no section headers
    put!(0u32.to_le_bytes()); // e_flags
    put!(64u16.to_le_bytes()); // e_ehsize
    put!(56u16.to_le_bytes()); // e_phentsize
    put!(1u16.to_le_bytes()); // e_phnum
    put!([0u8; 6]); // e_shentsize, e_shnum, e_shstrndx: no sections
    put!(1u32.to_le_bytes()); // p_type: PT_LOAD
    put!(5u32.to_le_bytes()); // p_flags: PF_R | PF_X
    put!(0u64.to_le_bytes()); // p_offset: the whole file...
    put!(BASE.to_le_bytes()); // p_vaddr: ...at BASE
    put!(BASE.to_le_bytes()); // p_paddr
    put!(SIZE.to_le_bytes()); // p_filesz
    put!(SIZE.to_le_bytes()); // p_memsz
    put!(0x1000u64.to_le_bytes()); // p_align
    put!(CODE);
    assert!(
        at == elf.len(),
        "the headers and the code fill the file exactly"
    );
    elf
}
