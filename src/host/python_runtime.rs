//! Finding CPython in a process, so that BPF can walk its Python frames
//! (python.h) and the symbolizer can name them: the object that holds the
//! runtime (`libpython3.X.so` or a `python3.X` executable), its version,
//! where `_PyRuntime` and `PyCode_Type` are mapped, and the offsets of the
//! fields the walk and the naming read. Offsets come from the runtime's own
//! `_Py_DebugOffsets` (3.13) or from a table per minor version (3.8 to
//! 3.12, taken from each version's debug information). Everything is read
//! from the file the process maps, through bounded reads: the file is the
//! user's and may be crafted. A Python without offsets is reported, never
//! walked with a guess.

use std::collections::HashMap;
use std::os::unix::fs::FileExt;
use std::sync::Arc;

use object::{Object, ObjectSymbol};

use crate::host::object_files::{ContentIdentity, ObjectFile};
use crate::host::process_maps::AddressSpace;
use crate::layouts::{py_offsets, py_process, PY_NO_FIELD};
use crate::model::module::Module;

/// Where a version keeps the fields of code objects and strings that
/// naming a frame reads (byte offsets).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CodeLayout {
    pub filename: u64,
    pub name: u64,
    /// co_qualname (3.11+); older versions name frames by co_name.
    pub qualname: Option<u64>,
    pub firstlineno: u64,
    /// co_lnotab (3.8, 3.9) or co_linetable (3.10+), a bytes object.
    pub linetable: u64,
    /// sizeof(PyASCIIObject) and sizeof(PyCompactUnicodeObject): where a
    /// compact string's characters start.
    pub ascii_header: u64,
    pub compact_header: u64,
}

impl CodeLayout {
    /// The most of a code object read to name it: every field above must
    /// lie within it (a crafted `_Py_DebugOffsets` could say otherwise).
    pub const MAX_HEADER: u64 = 512;

    /// How much of a code object holds every field this layout names.
    pub fn header_len(&self) -> u64 {
        [
            self.filename,
            self.name,
            self.qualname.unwrap_or(0),
            self.firstlineno,
            self.linetable,
        ]
        .into_iter()
        .max()
        .unwrap_or(0)
            + 8
    }
}

/// A Python process's runtime, as BPF and the symbolizer need it.
#[derive(Debug, Clone)]
pub struct PythonRuntime {
    /// (3, minor).
    pub version: (u8, u8),
    pub process: py_process,
    pub code: CodeLayout,
}

/// What a process's Python was found to be.
#[derive(Debug, Clone)]
pub enum Detection {
    NotPython,
    Supported(Arc<PythonRuntime>),
    /// A Python whose frames are not walked: why, e.g. "Python 3.7 (no offsets)".
    Unsupported(String),
}

/// The offsets of one minor version, from its debug information
/// (`ptype /o` of each struct in gdb, for the pyenv builds tests use).
struct VersionTable {
    minors: &'static [u8],
    walk: py_offsets,
    code: CodeLayout,
}

const fn walk_offsets(fields: [u16; 17], owned_by_cstack: u8) -> py_offsets {
    py_offsets {
        runtime_interpreters_head: fields[0],
        interp_threads_head: fields[1],
        tstate_next: fields[2],
        tstate_thread_id: fields[3],
        tstate_native_thread_id: fields[4],
        tstate_frame: fields[5],
        cframe_current_frame: fields[6],
        frame_previous: fields[7],
        frame_code: fields[8],
        frame_instruction: fields[9],
        frame_owner: fields[10],
        frame_is_entry: fields[11],
        frame_size: fields[12],
        code_firstlineno: fields[13],
        code_name: fields[14],
        code_instructions: fields[15],
        code_size: fields[16],
        // `next` is PyInterpreterState's first field up to 3.12.
        interp_next: 0,
        owned_by_cstack,
        pad: 0,
        // Set from the code layout (`with_filename_check`).
        code_filename: PY_NO_FIELD,
    }
}

/// `walk` with co_filename in the code check where the walk's read of a
/// code object (at most 128 bytes) can reach it.
fn with_filename_check(mut walk: py_offsets, code: &CodeLayout) -> py_offsets {
    if let Ok(filename) = u16::try_from(code.filename) {
        if filename + 8 <= 128 {
            walk.code_filename = filename;
            walk.code_size = walk.code_size.max(filename + 8);
        }
    }
    walk
}

const N: u16 = PY_NO_FIELD;

/// Fields, in `walk_offsets` order: interpreters.head, threads head, next,
/// thread_id, native_thread_id, frame/cframe/current_frame, cframe's
/// current_frame, previous, code, instruction, owner, is_entry, frame bytes
/// read, co_firstlineno, co_name, co_code_adaptive, code bytes read.
const TABLES: [VersionTable; 4] = [
    VersionTable {
        minors: &[8, 9],
        walk: walk_offsets(
            [
                32, 8, 8, 176, N, 24, N, 24, 32, 104, N, N, 108, 40, 112, N, 120,
            ],
            0xff,
        ),
        code: CodeLayout {
            filename: 104,
            name: 112,
            qualname: None,
            firstlineno: 40,
            linetable: 120,
            ascii_header: 48,
            compact_header: 72,
        },
    },
    VersionTable {
        minors: &[10],
        walk: walk_offsets(
            [
                32, 8, 8, 176, N, 24, N, 24, 32, 96, N, N, 100, 40, 112, N, 120,
            ],
            0xff,
        ),
        code: CodeLayout {
            filename: 104,
            name: 112,
            qualname: None,
            firstlineno: 40,
            linetable: 120,
            ascii_header: 48,
            compact_header: 72,
        },
    },
    VersionTable {
        minors: &[11],
        walk: walk_offsets(
            [
                40, 16, 8, 152, 160, 56, 8, 48, 32, 56, 69, 68, 72, 72, 120, 184, 128,
            ],
            0xff,
        ),
        code: CodeLayout {
            filename: 112,
            name: 120,
            qualname: Some(128),
            firstlineno: 72,
            linetable: 136,
            ascii_header: 48,
            compact_header: 72,
        },
    },
    VersionTable {
        minors: &[12],
        walk: walk_offsets(
            [
                40, 72, 8, 136, 144, 56, 0, 8, 0, 56, 70, N, 72, 68, 120, 192, 128,
            ],
            3,
        ),
        code: CodeLayout {
            filename: 112,
            name: 120,
            qualname: Some(128),
            firstlineno: 68,
            linetable: 136,
            ascii_header: 40,
            compact_header: 56,
        },
    },
];

/// The shim frames' owner value in 3.13 (FRAME_OWNED_BY_CSTACK): not in
/// `_Py_DebugOffsets`.
const OWNED_BY_CSTACK_3_13: u8 = 3;

/// Offsets of 3.13's `_Py_DebugOffsets` fields (Include/internal/pycore_runtime.h).
mod debug_offsets {
    pub const COOKIE: &[u8; 8] = b"xdebugpy";
    pub const VERSION: usize = 8;
    pub const FREE_THREADED: usize = 16;
    pub const RUNTIME_INTERPRETERS_HEAD: usize = 40;
    pub const INTERP_NEXT: usize = 64;
    pub const INTERP_THREADS_HEAD: usize = 72;
    pub const TSTATE_NEXT: usize = 168;
    pub const TSTATE_CURRENT_FRAME: usize = 184;
    pub const TSTATE_THREAD_ID: usize = 192;
    pub const TSTATE_NATIVE_THREAD_ID: usize = 200;
    pub const FRAME_PREVIOUS: usize = 232;
    pub const FRAME_EXECUTABLE: usize = 240;
    pub const FRAME_INSTR_PTR: usize = 248;
    pub const FRAME_OWNER: usize = 264;
    pub const CODE_FILENAME: usize = 280;
    pub const CODE_NAME: usize = 288;
    pub const CODE_QUALNAME: usize = 296;
    pub const CODE_LINETABLE: usize = 304;
    pub const CODE_FIRSTLINENO: usize = 312;
    pub const CODE_ADAPTIVE: usize = 344;
    pub const SIZE: usize = 352;
}

/// What a Python object file gives, whatever process maps it.
#[derive(Debug, Clone)]
enum ObjectPython {
    NotPython,
    Supported {
        version: (u8, u8),
        runtime: u64,
        code_type: u64,
        walk: py_offsets,
        code: CodeLayout,
    },
    Unsupported(String),
}

/// Finds Python runtimes, remembering what each object file gave.
#[derive(Default)]
pub struct PythonFinder {
    by_object: HashMap<ContentIdentity, ObjectPython>,
}

impl PythonFinder {
    /// The Python runtime of a process with these mappings, whose files
    /// `object_of` gives (opened through the process's map_files).
    pub fn detect(
        &mut self,
        space: &AddressSpace,
        object_of: impl Fn(&Module) -> Option<Arc<ObjectFile>>,
    ) -> Detection {
        let mut unsupported = None;
        for module in space.modules() {
            if python_version_in_name(&module.file_name()).is_none() {
                continue;
            }
            let Some(object) = object_of(module) else {
                continue;
            };
            let found = self
                .by_object
                .entry(object.content_identity())
                .or_insert_with(|| read_object(&object, &module.file_name()))
                .clone();
            match found {
                ObjectPython::NotPython => {}
                ObjectPython::Unsupported(why) => unsupported = Some(why),
                ObjectPython::Supported {
                    version,
                    runtime,
                    code_type,
                    walk,
                    code,
                } => {
                    let Some(bias) = object
                        .elf()
                        .virtual_address(module.file_offset)
                        .map(|address| module.start.wrapping_sub(address))
                    else {
                        continue;
                    };
                    return Detection::Supported(Arc::new(PythonRuntime {
                        version,
                        process: py_process {
                            runtime: runtime.wrapping_add(bias),
                            code_type: code_type.wrapping_add(bias),
                            offsets: with_filename_check(walk, &code),
                        },
                        code,
                    }));
                }
            }
        }
        match unsupported {
            Some(why) => Detection::Unsupported(why),
            None => Detection::NotPython,
        }
    }
}

/// (major, minor) from `python3.11`, `libpython3.11.so.1.0`, `python3.13t`.
fn python_version_in_name(name: &str) -> Option<(u8, u8)> {
    let rest = name
        .strip_prefix("libpython")
        .or_else(|| name.strip_prefix("python"))?;
    let (major, rest) = rest.split_once('.')?;
    let minor: String = rest.chars().take_while(char::is_ascii_digit).collect();
    Some((major.parse().ok()?, minor.parse().ok()?))
}

/// The bytes of `object` at virtual address `address`, if the file holds them.
fn read_at_address(object: &ObjectFile, address: u64, buffer: &mut [u8]) -> Option<()> {
    let elf = object.elf();
    let offset = elf.file_offset(address)?;
    object.file().read_exact_at(buffer, offset).ok()
}

/// What an object file named like a Python gives (its dynamic symbols and,
/// for 3.13, its `_Py_DebugOffsets`).
fn read_object(object: &ObjectFile, file_name: &str) -> ObjectPython {
    let data = object::ReadCache::new(object.file());
    let Ok(elf) = object::File::parse(&data) else {
        return ObjectPython::NotPython;
    };
    let mut symbols: HashMap<&str, u64> = HashMap::new();
    for symbol in elf.dynamic_symbols() {
        if let Ok(name @ ("_PyRuntime" | "PyCode_Type" | "Py_Version")) = symbol.name() {
            symbols.insert(name, symbol.address());
        }
    }
    let (Some(&runtime), Some(&code_type)) =
        (symbols.get("_PyRuntime"), symbols.get("PyCode_Type"))
    else {
        return ObjectPython::NotPython; // e.g. the launcher of a libpython build
    };
    let mut version = python_version_in_name(file_name);
    if let Some(&address) = symbols.get("Py_Version") {
        let mut hex = [0u8; 4];
        if read_at_address(object, address, &mut hex).is_some() {
            let hex = u32::from_ne_bytes(hex);
            version = Some(((hex >> 24) as u8, (hex >> 16) as u8));
        }
    }
    let Some(version @ (major, minor)) = version else {
        return ObjectPython::NotPython;
    };
    if major != 3 || minor < 8 {
        return ObjectPython::Unsupported(format!("Python {major}.{minor} (no offsets for it)"));
    }
    if minor >= 13 {
        return match offsets_from_debug_offsets(object, runtime) {
            Ok((walk, code)) => ObjectPython::Supported {
                version,
                runtime,
                code_type,
                walk,
                code,
            },
            Err(why) => ObjectPython::Unsupported(format!("Python {major}.{minor} ({why})")),
        };
    }
    match TABLES.iter().find(|table| table.minors.contains(&minor)) {
        Some(table) => ObjectPython::Supported {
            version,
            runtime,
            code_type,
            walk: table.walk,
            code: table.code,
        },
        None => ObjectPython::Unsupported(format!("Python {major}.{minor} (no offsets for it)")),
    }
}

/// 3.13's offsets, from the `_Py_DebugOffsets` at the start of `_PyRuntime`.
fn offsets_from_debug_offsets(
    object: &ObjectFile,
    runtime: u64,
) -> Result<(py_offsets, CodeLayout), &'static str> {
    let mut raw = [0u8; debug_offsets::SIZE];
    read_at_address(object, runtime, &mut raw).ok_or("_Py_DebugOffsets unreadable")?;
    parse_debug_offsets(&raw)
}

/// The walk's and the namer's offsets from the bytes of a `_Py_DebugOffsets`
/// (checked: its cookie, 3.13, not free-threaded, offsets in range).
fn parse_debug_offsets(
    raw: &[u8; debug_offsets::SIZE],
) -> Result<(py_offsets, CodeLayout), &'static str> {
    use debug_offsets as d;
    if &raw[..8] != d::COOKIE {
        return Err("no _Py_DebugOffsets");
    }
    let field = |at: usize| u64::from_ne_bytes(raw[at..at + 8].try_into().unwrap());
    if field(d::VERSION) >> 16 != 0x030d {
        return Err("a _Py_DebugOffsets of another version");
    }
    if field(d::FREE_THREADED) != 0 {
        return Err("free-threaded build, not supported");
    }
    let small = |at: usize| -> Result<u16, &'static str> {
        u16::try_from(field(at))
            .ok()
            .filter(|&offset| offset < 0x8000)
            .ok_or("an offset out of range")
    };
    // (offset, size) of the fields BPF reads from one object.
    let read_size = |fields: &[(u16, u16)]| -> Result<u16, &'static str> {
        let end = fields.iter().map(|&(f, size)| f + size).max().unwrap_or(8);
        if end > 128 {
            return Err("fields beyond what BPF reads");
        }
        Ok(end)
    };
    let frame = [
        small(d::FRAME_PREVIOUS)?,
        small(d::FRAME_EXECUTABLE)?,
        small(d::FRAME_INSTR_PTR)?,
        small(d::FRAME_OWNER)?,
    ];
    let firstlineno = small(d::CODE_FIRSTLINENO)?;
    let name = small(d::CODE_NAME)?;
    let walk = py_offsets {
        runtime_interpreters_head: small(d::RUNTIME_INTERPRETERS_HEAD)?,
        interp_threads_head: small(d::INTERP_THREADS_HEAD)?,
        interp_next: small(d::INTERP_NEXT)?,
        tstate_next: small(d::TSTATE_NEXT)?,
        tstate_thread_id: small(d::TSTATE_THREAD_ID)?,
        tstate_native_thread_id: small(d::TSTATE_NATIVE_THREAD_ID)?,
        tstate_frame: small(d::TSTATE_CURRENT_FRAME)?,
        cframe_current_frame: PY_NO_FIELD,
        frame_previous: frame[0],
        frame_code: frame[1],
        frame_instruction: frame[2],
        frame_owner: frame[3],
        frame_is_entry: PY_NO_FIELD,
        frame_size: read_size(&[(frame[0], 8), (frame[1], 8), (frame[2], 8), (frame[3], 1)])?,
        code_firstlineno: firstlineno,
        code_name: name,
        code_instructions: small(d::CODE_ADAPTIVE)?,
        code_size: read_size(&[(firstlineno, 4), (name, 8)])?,
        owned_by_cstack: OWNED_BY_CSTACK_3_13,
        pad: 0,
        code_filename: PY_NO_FIELD,
    };
    let code = CodeLayout {
        filename: small(d::CODE_FILENAME)?.into(),
        name: u64::from(name),
        qualname: Some(small(d::CODE_QUALNAME)?.into()),
        firstlineno: u64::from(firstlineno),
        linetable: small(d::CODE_LINETABLE)?.into(),
        ascii_header: 40,
        compact_header: 56,
    };
    if code.header_len() > CodeLayout::MAX_HEADER {
        return Err("code object fields beyond what naming reads");
    }
    Ok((walk, code))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_come_from_executable_and_library_names() {
        assert_eq!(python_version_in_name("python3.11"), Some((3, 11)));
        assert_eq!(python_version_in_name("libpython3.8.so.1.0"), Some((3, 8)));
        assert_eq!(python_version_in_name("python3.13t"), Some((3, 13)));
        assert_eq!(python_version_in_name("python3"), None);
        assert_eq!(python_version_in_name("pythonista"), None);
    }

    /// A 3.13 `_Py_DebugOffsets` whose every offset field is 16.
    fn debug_offsets_3_13(free_threaded: u64) -> [u8; debug_offsets::SIZE] {
        let mut raw = [0u8; debug_offsets::SIZE];
        for at in (debug_offsets::VERSION..debug_offsets::SIZE).step_by(8) {
            raw[at..at + 8].copy_from_slice(&16u64.to_ne_bytes());
        }
        raw[..8].copy_from_slice(debug_offsets::COOKIE);
        let version = 0x030d_00f0u64;
        raw[8..16].copy_from_slice(&version.to_ne_bytes());
        raw[16..24].copy_from_slice(&free_threaded.to_ne_bytes());
        raw
    }

    #[test]
    fn debug_offsets_are_checked_and_free_threaded_builds_refused() {
        let (walk, code) = parse_debug_offsets(&debug_offsets_3_13(0)).unwrap();
        assert_eq!(walk.interp_next, 16);
        assert_eq!(walk.frame_size, 24);
        assert_eq!(code.qualname, Some(16));
        assert_eq!(
            parse_debug_offsets(&debug_offsets_3_13(1)).unwrap_err(),
            "free-threaded build, not supported"
        );
        let mut other_version = debug_offsets_3_13(0);
        other_version[8..16].copy_from_slice(&0x030e_00a0u64.to_ne_bytes());
        assert!(parse_debug_offsets(&other_version).is_err());
        let mut no_cookie = debug_offsets_3_13(0);
        no_cookie[0] = b'X';
        assert!(parse_debug_offsets(&no_cookie).is_err());
        let mut far = debug_offsets_3_13(0);
        let at = debug_offsets::FRAME_PREVIOUS;
        far[at..at + 8].copy_from_slice(&0x1_0000u64.to_ne_bytes());
        assert!(parse_debug_offsets(&far).is_err());
        // Naming's fields too: a code object read is sized by them.
        for (at, value) in [
            (debug_offsets::CODE_FILENAME, 1u64 << 36),
            (debug_offsets::CODE_QUALNAME, 1 << 32),
            (debug_offsets::CODE_LINETABLE, 4096),
        ] {
            let mut far = debug_offsets_3_13(0);
            far[at..at + 8].copy_from_slice(&value.to_ne_bytes());
            assert!(parse_debug_offsets(&far).is_err(), "{at}: {value}");
        }
    }

    #[test]
    fn every_table_reads_what_its_offsets_need() {
        for table in &TABLES {
            let walk = &table.walk;
            let instruction_size = if walk.code_instructions == PY_NO_FIELD {
                4
            } else {
                8
            };
            assert!(
                walk.frame_previous + 8 <= walk.frame_size,
                "{:?}",
                table.minors
            );
            assert!(walk.frame_code + 8 <= walk.frame_size, "{:?}", table.minors);
            assert!(walk.frame_instruction + instruction_size <= walk.frame_size);
            for byte_field in [walk.frame_owner, walk.frame_is_entry] {
                assert!(byte_field == PY_NO_FIELD || byte_field < walk.frame_size);
            }
            assert!(walk.frame_size <= 128 && walk.code_size <= 128);
            assert!(
                walk.code_firstlineno + 4 <= walk.code_size && walk.code_name + 8 <= walk.code_size
            );
            assert!(table.code.header_len() <= CodeLayout::MAX_HEADER);
        }
    }
}
