//! Reads struct member offsets from the running kernel's BTF (`/sys/kernel/btf/vmlinux`).
//!
//! The eBPF programs are written in Rust, which has no CO-RE field relocations, and the kernel
//! structs they read (`struct file`, `struct linux_binprm`, ...) change layout between kernel
//! versions. So the daemon looks the offsets up here and passes them to the programs as
//! read-only globals before loading; the verifier then sees them as constants.
use std::{collections::HashMap, path::Path};

/// BTF kinds this reader needs to tell apart (see `include/uapi/linux/btf.h`).
const KIND_STRUCT: u32 = 4;
const KIND_UNION: u32 = 5;
const KIND_TYPEDEF: u32 = 8;
const KIND_VOLATILE: u32 = 9;
const KIND_CONST: u32 = 10;
const KIND_RESTRICT: u32 = 11;
const KIND_TYPE_TAG: u32 = 18;
const KIND_FUNC: u32 = 12;
const KIND_FUNC_PROTO: u32 = 13;

/// Errors reading BTF.
#[derive(Debug, thiserror::Error)]
pub enum BtfError {
    #[error("reading {path}: {source} (the kernel needs CONFIG_DEBUG_INFO_BTF=y)")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("malformed BTF: {0}")]
    Malformed(&'static str),
    #[error("kernel BTF has no struct {0}")]
    NoStruct(String),
    #[error("kernel BTF: struct {strukt} has no member {member}")]
    NoMember { strukt: String, member: String },
    #[error("kernel BTF has no function {0} (is this an LSM hook of this kernel?)")]
    NoFunction(String),
}

struct Member {
    name_off: u32,
    type_id: u32,
    bit_offset: u32,
}

struct Type {
    kind: u32,
    /// `size_or_type`: the referenced type for modifiers, typedefs and functions.
    referenced: u32,
    /// Members of a struct or union, parameters of a function prototype.
    vlen: u32,
    members: Vec<Member>,
}

/// The struct and union types of a BTF blob, enough to resolve member offsets.
pub struct KernelBtf {
    strings: Vec<u8>,
    types: Vec<Type>,
    structs_by_name: HashMap<String, u32>,
    funcs_by_name: HashMap<String, u32>,
}

fn u32_at(data: &[u8], off: usize) -> Result<u32, BtfError> {
    let bytes = data
        .get(off..off + 4)
        .ok_or(BtfError::Malformed("truncated"))?;
    Ok(u32::from_le_bytes(bytes.try_into().expect("4 bytes")))
}

impl KernelBtf {
    /// Reads the running kernel's BTF.
    ///
    /// # Errors
    /// When the file cannot be read or is not BTF.
    pub fn from_sys_fs() -> Result<Self, BtfError> {
        Self::from_file(Path::new("/sys/kernel/btf/vmlinux"))
    }

    /// Reads a raw BTF file.
    ///
    /// # Errors
    /// When the file cannot be read or is not BTF.
    pub fn from_file(path: &Path) -> Result<Self, BtfError> {
        let data = std::fs::read(path).map_err(|source| BtfError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse(&data)
    }

    /// Parses little-endian raw BTF.
    ///
    /// # Errors
    /// When `data` is not well-formed BTF.
    pub fn parse(data: &[u8]) -> Result<Self, BtfError> {
        if data.get(0..2) != Some(&[0x9f, 0xeb]) {
            return Err(BtfError::Malformed("bad magic (not little-endian BTF)"));
        }
        let hdr_len = u32_at(data, 4)? as usize;
        let (type_off, type_len) = (u32_at(data, 8)? as usize, u32_at(data, 12)? as usize);
        let (str_off, str_len) = (u32_at(data, 16)? as usize, u32_at(data, 20)? as usize);
        let types_data = data
            .get(hdr_len + type_off..hdr_len + type_off + type_len)
            .ok_or(BtfError::Malformed("type section out of bounds"))?;
        let strings = data
            .get(hdr_len + str_off..hdr_len + str_off + str_len)
            .ok_or(BtfError::Malformed("string section out of bounds"))?
            .to_vec();
        let mut btf = Self {
            strings,
            // Type id 0 is `void`.
            types: vec![Type {
                kind: 0,
                referenced: 0,
                vlen: 0,
                members: Vec::new(),
            }],
            structs_by_name: HashMap::new(),
            funcs_by_name: HashMap::new(),
        };
        let mut pos = 0;
        while pos < types_data.len() {
            let name_off = u32_at(types_data, pos)?;
            let info = u32_at(types_data, pos + 4)?;
            let referenced = u32_at(types_data, pos + 8)?;
            pos += 12;
            let vlen = (info & 0xffff) as usize;
            let kind = (info >> 24) & 0x1f;
            let kind_flag = info >> 31 == 1;
            let mut members = Vec::new();
            let extra = match kind {
                1 | 14 | 17 => 4,                                // int, var, decl_tag
                3 => 12,                                         // array
                KIND_STRUCT | KIND_UNION | 15 | 19 => 12 * vlen, // members, datasec, enum64
                6 | 13 => 8 * vlen,                              // enum, func_proto
                0 | 2 | 7..=12 | 16 | 18 => 0,
                _ => return Err(BtfError::Malformed("unknown type kind")),
            };
            if kind == KIND_STRUCT || kind == KIND_UNION {
                for i in 0..vlen {
                    let base = pos + 12 * i;
                    let raw = u32_at(types_data, base + 8)?;
                    members.push(Member {
                        name_off: u32_at(types_data, base)?,
                        type_id: u32_at(types_data, base + 4)?,
                        bit_offset: if kind_flag { raw & 0x00ff_ffff } else { raw },
                    });
                }
            }
            pos += extra;
            let id = u32::try_from(btf.types.len())
                .map_err(|_| BtfError::Malformed("too many types"))?;
            if kind == KIND_STRUCT && name_off != 0 {
                let name = btf.name(name_off).to_owned();
                btf.structs_by_name.entry(name).or_insert(id);
            }
            if kind == KIND_FUNC && name_off != 0 {
                let name = btf.name(name_off).to_owned();
                btf.funcs_by_name.entry(name).or_insert(id);
            }
            btf.types.push(Type {
                kind,
                referenced,
                vlen: u32::try_from(vlen).unwrap_or(u32::MAX),
                members,
            });
        }
        Ok(btf)
    }

    fn name(&self, off: u32) -> &str {
        let rest = self.strings.get(off as usize..).unwrap_or_default();
        let end = rest.iter().position(|&b| b == 0).unwrap_or(rest.len());
        std::str::from_utf8(&rest[..end]).unwrap_or_default()
    }

    /// Follows typedefs and qualifiers to the underlying type id.
    fn resolve(&self, mut id: u32) -> u32 {
        for _ in 0..32 {
            match self.types.get(id as usize) {
                Some(t)
                    if matches!(
                        t.kind,
                        KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT | KIND_TYPE_TAG
                    ) =>
                {
                    id = t.referenced;
                }
                _ => break,
            }
        }
        id
    }

    /// Bit offset of `member` in the struct/union `id`, looking through anonymous members.
    fn find_member(&self, id: u32, member: &str, depth: u32) -> Option<u32> {
        let ty = self.types.get(id as usize)?;
        for m in &ty.members {
            if m.name_off != 0 && self.name(m.name_off) == member {
                return Some(m.bit_offset);
            }
        }
        if depth > 8 {
            return None;
        }
        for m in ty.members.iter().filter(|m| m.name_off == 0) {
            let inner = self.resolve(m.type_id);
            let is_aggregate = self
                .types
                .get(inner as usize)
                .is_some_and(|t| t.kind == KIND_STRUCT || t.kind == KIND_UNION);
            if is_aggregate && let Some(off) = self.find_member(inner, member, depth + 1) {
                return Some(m.bit_offset + off);
            }
        }
        None
    }

    /// Byte offset of `member` in `struct strukt`.
    ///
    /// # Errors
    /// When the struct or member does not exist in this kernel.
    pub fn member_offset(&self, strukt: &str, member: &str) -> Result<u32, BtfError> {
        let id = *self
            .structs_by_name
            .get(strukt)
            .ok_or_else(|| BtfError::NoStruct(strukt.to_owned()))?;
        let bits = self
            .find_member(id, member, 0)
            .ok_or_else(|| BtfError::NoMember {
                strukt: strukt.to_owned(),
                member: member.to_owned(),
            })?;
        Ok(bits / 8)
    }
}

impl KernelBtf {
    /// Number of parameters of function `name`: for `bpf_lsm_HOOK`, the function an LSM
    /// program of hook `HOOK` attaches to, the index of the previous program's verdict in the
    /// program's context (the `bpf` hook has 3 on 6.1 and gained a `bool kernel` later).
    ///
    /// # Errors
    /// When this kernel has no such function, or its type is not a function prototype.
    pub fn func_param_count(&self, name: &str) -> Result<u32, BtfError> {
        let id = *self
            .funcs_by_name
            .get(name)
            .ok_or_else(|| BtfError::NoFunction(name.to_owned()))?;
        let proto = self
            .types
            .get(id as usize)
            .and_then(|func| self.types.get(func.referenced as usize))
            .filter(|proto| proto.kind == KIND_FUNC_PROTO)
            .ok_or(BtfError::Malformed("function without a prototype"))?;
        Ok(proto.vlen)
    }
}

/// The member offsets the eBPF programs need, read from `btf`.
///
/// # Errors
/// When this kernel lacks one of the members (an unsupported kernel).
pub fn kernel_layout(btf: &KernelBtf) -> Result<jit_common::layout::KernelLayout, BtfError> {
    let mut offsets = [0u32; jit_common::layout::KernelLayout::MEMBERS.len()];
    for (slot, (strukt, member)) in offsets
        .iter_mut()
        .zip(jit_common::layout::KernelLayout::MEMBERS)
    {
        *slot = match btf.member_offset(strukt, member) {
            Err(BtfError::NoMember { .. })
                if jit_common::layout::KernelLayout::OPTIONAL.contains(&(strukt, member)) =>
            {
                jit_common::layout::KernelLayout::ABSENT
            }
            other => other?,
        };
    }
    Ok(jit_common::layout::KernelLayout::from_offsets(offsets))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Builds a tiny BTF blob: `struct inner { int a; int b; }` and
    /// `struct outer { long x; struct { int pad; struct inner in; }; int y; }` (anonymous member),
    /// and `int hook(int a, int b)`.
    fn sample() -> Vec<u8> {
        let strings = b"\0int\0a\0b\0inner\0outer\0x\0in\0y\0pad\0hook\0".to_vec();
        let s = |name: &str| -> u32 {
            let needle = format!("\0{name}\0");
            u32::try_from(
                strings
                    .windows(needle.len())
                    .position(|w| w == needle.as_bytes())
                    .unwrap()
                    + 1,
            )
            .unwrap()
        };
        let mut types = Vec::new();
        let mut push = |words: &[u32]| {
            for w in words {
                types.extend_from_slice(&w.to_le_bytes());
            }
        };
        push(&[s("int"), 1 << 24, 4, 32]); // 1: int (+4 bytes of encoding)
        push(&[s("inner"), (KIND_STRUCT << 24) | 2, 8]); // 2: struct inner
        push(&[s("a"), 1, 0]);
        push(&[s("b"), 1, 32]);
        push(&[0, (KIND_STRUCT << 24) | 2, 12]); // 3: anonymous struct
        push(&[s("pad"), 1, 0]);
        push(&[s("in"), 2, 32]);
        push(&[s("outer"), (KIND_STRUCT << 24) | 3, 24]); // 4: struct outer
        push(&[s("x"), 1, 0]);
        push(&[0, 3, 64]);
        push(&[s("y"), 1, 160]);
        push(&[0, (KIND_FUNC_PROTO << 24) | 2, 1]); // 5: int (int a, int b)
        push(&[s("a"), 1]);
        push(&[s("b"), 1]);
        push(&[s("hook"), KIND_FUNC << 24, 5]); // 6: func hook
        let mut blob = Vec::new();
        for w in [
            0xeb9f_u32 | (1 << 16),
            24,
            0,
            u32::try_from(types.len()).unwrap(),
        ] {
            blob.extend_from_slice(&w.to_le_bytes());
        }
        for w in [
            u32::try_from(types.len()).unwrap(),
            u32::try_from(strings.len()).unwrap(),
        ] {
            blob.extend_from_slice(&w.to_le_bytes());
        }
        blob.extend_from_slice(&types);
        blob.extend_from_slice(&strings);
        blob
    }

    #[test]
    fn resolves_direct_and_anonymous_members() {
        let btf = KernelBtf::parse(&sample()).unwrap();
        assert_eq!(btf.member_offset("inner", "b").unwrap(), 4);
        assert_eq!(btf.member_offset("outer", "x").unwrap(), 0);
        assert_eq!(btf.member_offset("outer", "in").unwrap(), 12);
        assert_eq!(btf.member_offset("outer", "y").unwrap(), 20);
        assert!(matches!(
            btf.member_offset("outer", "nope"),
            Err(BtfError::NoMember { .. })
        ));
        assert!(matches!(
            btf.member_offset("nope", "x"),
            Err(BtfError::NoStruct(_))
        ));
    }

    #[test]
    fn counts_function_parameters() {
        let btf = KernelBtf::parse(&sample()).unwrap();
        assert_eq!(btf.func_param_count("hook").unwrap(), 2);
        assert!(matches!(
            btf.func_param_count("outer"),
            Err(BtfError::NoFunction(_))
        ));
    }

    #[test]
    fn rejects_non_btf() {
        assert!(KernelBtf::parse(b"\x7fELF....................").is_err());
    }

    #[test]
    fn host_kernel_btf_has_the_members_jit_needs() {
        // The host kernel cannot run our programs, but its BTF is real kernel BTF.
        let path = Path::new("/sys/kernel/btf/vmlinux");
        if !path.exists() {
            eprintln!(
                "SKIPPED host_kernel_btf_has_the_members_jit_needs: {} missing",
                path.display()
            );
            return;
        }
        let btf = KernelBtf::from_file(path).unwrap();
        assert!(btf.member_offset("linux_binprm", "file").is_ok());
        assert!(btf.member_offset("file", "f_path").is_ok());
        let layout = kernel_layout(&btf).unwrap();
        assert!(layout.task_tgid > 0 && layout.file_f_path > 0, "{layout:?}");
        // The self-protection hooks, as jit_ebpf reads them.
        // `bpf(int cmd, union bpf_attr *attr, unsigned int size[, bool kernel])`.
        let bpf_args = btf.func_param_count("bpf_lsm_bpf").unwrap();
        assert!(
            matches!(bpf_args, 3 | 4),
            "bpf_lsm_bpf has {bpf_args} parameters"
        );
        assert_eq!(btf.func_param_count("bpf_lsm_task_kill").unwrap(), 4);
        assert_eq!(
            btf.func_param_count("bpf_lsm_ptrace_access_check").unwrap(),
            2
        );
    }
}
