//! Naming the Python frames BPF read (python.h) and putting them in their
//! native stack. A code object is read once from the process's memory
//! (/proc/PID/mem, bounded reads: the process is the user's) and cached by
//! (process, address, check); it is named only if it still has the first
//! line and name that BPF saw, so a freed and reused address gives
//! `[unknown python]`, never another function. A process's cached code
//! objects are held within its share of the memory budget
//! (`host::memory_budget`); past it, its frames are not read but counted
//! `[unknown python]`. Each run of Python frames
//! that one C call of `_PyEval_EvalFrameDefault` ran takes that native
//! frame's place, matched from the leaf (from the root when the Python walk
//! is whole and a native one is left over at the leaf), so the stack reads
//! `main → … → python function → … → C extension → kernel`. A `-X perf`
//! trampoline (`py::f:file`, from the perf map) right under a replaced
//! frame is dropped: it names the Python frame the run shows.

use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::Arc;

use crate::bpf::stack_maps::TRUNCATED;
use crate::host::memory_budget::{budget, Kind, Reservation};
use crate::host::perf_maps::CPYTHON_TRAMPOLINE_PREFIX;
use crate::host::python_runtime::{CodeLayout, PythonRuntime};
use crate::layouts::{PY_FRAME_ENTERED_FROM_C, PY_NO_FIELD};
use crate::model::profile::{Frame, FrameKind, SourceLine};

/// The native function each run of Python frames replaces.
const EVAL_FUNCTION: &str = "_PyEval_EvalFrameDefault";
/// Where CPython 3.8 to 3.13 wait for the GIL.
const GIL_WAIT_FUNCTION: &str = "take_gil";
/// The most of a name, file name or line table read from a process.
const MAX_STRING: usize = 1024;
const MAX_LINE_TABLE: usize = 64 * 1024;

/// A code object as read from its process.
struct CodeObject {
    /// `file.py:qualname`, as frames are named.
    name: String,
    file: String,
    firstlineno: u32,
    /// Empty when the memory budget had no room for it (frames get no line).
    line_table: Vec<u8>,
}

/// A process's memory, and what its code objects hold of the memory budget.
struct ProcessMemory {
    memory: File,
    held: Reservation,
    /// The budget refused it room: no more of its code objects are read.
    full: bool,
}

/// Bytes a cached code object costs besides its names and line table.
const CODE_OBJECT_OVERHEAD: u64 = 128;

/// One Python frame from BPF, decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawPythonFrame {
    pub code: u64,
    pub instruction: u32,
    pub check: u32,
}

impl RawPythonFrame {
    fn entered_from_c(&self) -> bool {
        self.check & PY_FRAME_ENTERED_FROM_C != 0
    }
}

/// Decodes the words StackMaps gives for a Python stack (two per frame,
/// leaf first, then TRUNCATED if cut): the frames, and whether it was cut.
pub fn decode_stack(words: &[u64]) -> (Vec<RawPythonFrame>, bool) {
    let truncated = words.len() % 2 == 1 && words.last() == Some(&TRUNCATED);
    let frames = words
        .chunks_exact(2)
        .map(|pair| RawPythonFrame {
            code: pair[0],
            instruction: pair[1] as u32,
            check: (pair[1] >> 32) as u32,
        })
        .collect();
    (frames, truncated)
}

/// Names Python frames; keeps what it read across calls.
#[derive(Default)]
pub struct PythonNames {
    code_objects: HashMap<(u32, u64, u32), Option<Arc<CodeObject>>>,
    processes: HashMap<u32, Option<ProcessMemory>>,
    /// Frames that could not be named (code object gone or changed).
    pub unnamed: u64,
    /// Stacks whose native walk had no interpreter frame to replace: their
    /// Python frames were put above it.
    pub unmerged: u64,
}

impl PythonNames {
    /// Forgets what it read of processes no longer running (serve).
    pub fn forget(&mut self, alive: impl Fn(u32) -> bool) {
        self.code_objects.retain(|(tgid, _, _), _| alive(*tgid));
        self.processes.retain(|tgid, _| alive(*tgid));
    }

    /// Reads (once) the code objects of a Python stack (StackMaps' words)
    /// while the process lives.
    pub fn read_ahead(&mut self, tgid: u32, runtime: &PythonRuntime, words: &[u64]) {
        for frame in decode_stack(words).0 {
            self.code_object(tgid, runtime, &frame);
        }
    }

    fn code_object(
        &mut self,
        tgid: u32,
        runtime: &PythonRuntime,
        frame: &RawPythonFrame,
    ) -> Option<Arc<CodeObject>> {
        let key = (tgid, frame.code, frame.check & !PY_FRAME_ENTERED_FROM_C);
        if let Some(known) = self.code_objects.get(&key) {
            return known.clone();
        }
        let process = self.processes.entry(tgid).or_insert_with(|| {
            Some(ProcessMemory {
                memory: File::open(format!("/proc/{tgid}/mem")).ok()?,
                held: budget().reserve(Kind::PythonCode, 0)?,
                full: false,
            })
        });
        let read = process
            .as_mut()
            .filter(|process| !process.full)
            .and_then(|process| read_code_object(process, runtime, frame.code, key.2))
            .map(Arc::new);
        self.code_objects.insert(key, read.clone());
        read
    }

    /// The Python frame for `frame`, root-side code first.
    fn frame(&mut self, tgid: u32, runtime: &PythonRuntime, raw: &RawPythonFrame) -> Frame {
        let Some(code) = self.code_object(tgid, runtime, raw) else {
            self.unnamed += 1;
            return Frame {
                kind: FrameKind::Python,
                address: raw.code,
                functions: vec!["[unknown python]".to_string()],
                module: None,
                source: None,
            };
        };
        let line = line_of(runtime.version.1, &code, raw.instruction).unwrap_or(code.firstlineno);
        Frame {
            kind: FrameKind::Python,
            address: raw.code,
            functions: vec![code.name.clone()],
            module: None,
            source: Some(Arc::new(SourceLine {
                file: code.file.clone(),
                function_line: code.firstlineno,
                line,
            })),
        }
    }

    /// Puts a Python stack into `user` (root first): each run of Python
    /// frames one C call ran replaces that call's `_PyEval_EvalFrameDefault`
    /// frame, matched from the leaf. With no such frame (a native walk cut
    /// short) the Python frames go above the native ones (counted).
    pub fn merge(
        &mut self,
        tgid: u32,
        runtime: &PythonRuntime,
        words: &[u64],
        user: Vec<Frame>,
    ) -> Vec<Frame> {
        let (frames, truncated) = decode_stack(words);
        // Runs, leaf first: each ends (root side) with the frame a C call entered.
        let mut runs: Vec<Vec<RawPythonFrame>> = Vec::new();
        let mut current = Vec::new();
        for frame in frames {
            let entered = frame.entered_from_c();
            current.push(frame);
            if entered {
                runs.push(std::mem::take(&mut current));
            }
        }
        if !current.is_empty() {
            // The root-most run's entry was not reached (walk cut): it still
            // belongs to the next interpreter frame.
            runs.push(current);
        }
        let eval_frames: Vec<usize> = user
            .iter()
            .enumerate()
            .filter(|(_, frame)| frame.functions.first().is_some_and(|f| f == EVAL_FUNCTION))
            .map(|(index, _)| index)
            .collect();
        if runs.is_empty() {
            return user;
        }
        if eval_frames.is_empty() {
            // The native walk stopped before the interpreter (it has only
            // the C code the leaf-most Python frame called): the Python
            // frames are its callers, with the callers' cut marked.
            self.unmerged += 1;
            let mut merged = vec![Frame {
                kind: FrameKind::Python,
                address: TRUNCATED,
                functions: vec!["[native callers unknown]".to_string()],
                module: None,
                source: None,
            }];
            for raw in runs.iter().flatten().rev() {
                merged.push(self.frame(tgid, runtime, raw));
            }
            merged.extend(user);
            return merged;
        }
        let mut replacement: HashMap<usize, Vec<RawPythonFrame>> = HashMap::new();
        let cut_before_root = if !truncated && eval_frames.len() > runs.len() {
            // The Python walk reached its root, so the native walk's extra
            // interpreter frames are at the leaf: one returning (its Python
            // frame popped already) or just entered. Pair from the root;
            // they stay `_PyEval_EvalFrameDefault`.
            for (&index, run) in eval_frames.iter().zip(runs.into_iter().rev()) {
                replacement.insert(index, run);
            }
            false
        } else {
            // Pair the leaf-most interpreter frame with the leaf-most run
            // (the native walk may have been cut before the root).
            let mut runs = runs.into_iter();
            for &index in eval_frames.iter().rev() {
                match runs.next() {
                    Some(run) => {
                        replacement.insert(index, run);
                    }
                    None => break,
                }
            }
            truncated || runs.next().is_some()
        };
        let mut merged = Vec::with_capacity(user.len() + replacement.len() * 4);
        for (index, frame) in user.into_iter().enumerate() {
            match replacement.remove(&index) {
                Some(run) => {
                    // A `-X perf` trampoline calls the interpreter for the
                    // Python frame it names: the run shows that frame.
                    if merged.last().is_some_and(is_cpython_trampoline) {
                        merged.pop();
                    }
                    if cut_before_root && index == eval_frames[0] {
                        merged.push(Frame {
                            kind: FrameKind::Python,
                            address: TRUNCATED,
                            functions: vec!["[truncated python]".to_string()],
                            module: None,
                            source: None,
                        });
                    }
                    for raw in run.iter().rev() {
                        merged.push(self.frame(tgid, runtime, raw));
                    }
                }
                None => merged.push(frame),
            }
        }
        merged
    }
}

fn is_cpython_trampoline(frame: &Frame) -> bool {
    frame.kind == FrameKind::Jit
        && frame
            .functions
            .first()
            .is_some_and(|name| name.starts_with(CPYTHON_TRAMPOLINE_PREFIX))
}

/// Marks a Python thread waiting for the GIL: a `[waiting for the GIL]`
/// frame above the interpreter's `take_gil` (inlined or not).
pub fn mark_gil_wait(user: &mut Vec<Frame>) {
    let Some(index) = user
        .iter()
        .position(|frame| frame.functions.iter().any(|f| f == GIL_WAIT_FUNCTION))
    else {
        return;
    };
    user.insert(
        index,
        Frame {
            kind: FrameKind::Python,
            address: 0,
            functions: vec!["[waiting for the GIL]".to_string()],
            module: None,
            source: None,
        },
    );
}

/// Reads `len` bytes at `address` of a process.
fn read_memory(memory: &File, address: u64, len: usize) -> Option<Vec<u8>> {
    let mut bytes = vec![0u8; len];
    memory.read_exact_at(&mut bytes, address).ok()?;
    Some(bytes)
}

fn word(bytes: &[u8], at: u64) -> Option<u64> {
    let at = usize::try_from(at).ok()?;
    Some(u64::from_ne_bytes(bytes.get(at..at + 8)?.try_into().ok()?))
}

/// A code object's names and line table, if it still matches `check`.
fn read_code_object(
    process: &mut ProcessMemory,
    runtime: &PythonRuntime,
    address: u64,
    check: u32,
) -> Option<CodeObject> {
    let memory = &process.memory;
    let layout = &runtime.code;
    let header_len = layout.header_len();
    if header_len > CodeLayout::MAX_HEADER {
        return None;
    }
    let header = read_memory(memory, address, header_len as usize)?;
    if word(&header, 8)? != runtime.process.code_type {
        return None;
    }
    let firstlineno = word(&header, layout.firstlineno)? as u32;
    let name_address = word(&header, layout.name)?;
    let mut expected = firstlineno ^ (name_address >> 4) as u32;
    if runtime.process.offsets.code_filename != PY_NO_FIELD {
        expected ^= ((word(&header, layout.filename)? >> 4) as u32).rotate_left(16);
    }
    if expected & !PY_FRAME_ENTERED_FROM_C != check {
        return None;
    }
    let function = read_string(
        memory,
        layout,
        word(&header, layout.qualname.unwrap_or(layout.name))?,
    )?;
    let file = read_string(memory, layout, word(&header, layout.filename)?)?;
    let mut line_table =
        read_bytes_object(memory, word(&header, layout.linetable)?).unwrap_or_default();
    let base = file.rsplit('/').next().unwrap_or(&file);
    let name = format!("{base}:{function}");
    // Within the process's share of the memory budget, names first, then
    // the line table: over it this frame is named without a line, and the
    // process's later code objects are not read.
    let names = (name.len() + file.len()) as u64 + CODE_OBJECT_OVERHEAD;
    if !process.held.grow(names) {
        process.full = true;
        return None;
    }
    if !process.held.grow(line_table.len() as u64) {
        process.full = true;
        line_table = Vec::new();
    }
    Some(CodeObject {
        name,
        file,
        firstlineno,
        line_table,
    })
}

/// A str object's text (compact strings: every str a code object holds).
fn read_string(memory: &File, layout: &CodeLayout, address: u64) -> Option<String> {
    let header = read_memory(memory, address, layout.compact_header as usize)?;
    let length = usize::try_from(word(&header, 16)?).ok()?.min(MAX_STRING);
    let state = u32::from_ne_bytes(header.get(32..36)?.try_into().ok()?);
    let kind = (state >> 2) & 7;
    let compact = (state >> 5) & 1 == 1;
    let ascii = (state >> 6) & 1 == 1;
    if !compact {
        return None;
    }
    let start = if ascii {
        layout.ascii_header
    } else {
        layout.compact_header
    };
    let width = match kind {
        1 => 1,
        2 => 2,
        4 => 4,
        _ => return None,
    };
    let bytes = read_memory(memory, address + start, length * width)?;
    let text = match width {
        1 => bytes.iter().map(|&b| char::from(b)).collect(),
        2 => bytes
            .chunks_exact(2)
            .map(|c| char::from_u32(u32::from(u16::from_ne_bytes([c[0], c[1]]))).unwrap_or('?'))
            .collect(),
        _ => bytes
            .chunks_exact(4)
            .map(|c| char::from_u32(u32::from_ne_bytes([c[0], c[1], c[2], c[3]])).unwrap_or('?'))
            .collect(),
    };
    Some(text)
}

/// A bytes object's contents.
fn read_bytes_object(memory: &File, address: u64) -> Option<Vec<u8>> {
    let header = read_memory(memory, address, 32)?;
    let length = usize::try_from(word(&header, 16)?)
        .ok()?
        .min(MAX_LINE_TABLE);
    read_memory(memory, address + 32, length)
}

/// The line running at `instruction` (see `struct py_frame`).
fn line_of(minor: u8, code: &CodeObject, instruction: u32) -> Option<u32> {
    let table = &code.line_table;
    let first = i64::from(code.firstlineno);
    let line = match minor {
        8 | 9 => lnotab_line(table, first, u64::from(instruction)),
        10 => linetable_3_10_line(table, first, u64::from(instruction) * 2),
        _ => location_table_line(table, first, u64::from(instruction) / 2),
    }?;
    u32::try_from(line).ok().filter(|&line| line > 0)
}

/// 3.8, 3.9: (address increment, line increment) byte pairs; `offset` in bytes.
fn lnotab_line(table: &[u8], first: i64, offset: u64) -> Option<i64> {
    let mut line = first;
    let mut address = 0u64;
    for pair in table.chunks_exact(2) {
        address += u64::from(pair[0]);
        if address > offset {
            break;
        }
        line += i64::from(pair[1] as i8);
    }
    Some(line)
}

/// 3.10: (bytes covered, line delta or -128 for none) pairs; `offset` in bytes.
fn linetable_3_10_line(table: &[u8], first: i64, offset: u64) -> Option<i64> {
    let mut line = first;
    let mut end = 0u64;
    for pair in table.chunks_exact(2) {
        let delta = pair[1] as i8;
        let current = (delta != -128).then(|| {
            line += i64::from(delta);
            line
        });
        end += u64::from(pair[0]);
        if end > offset {
            return current;
        }
    }
    None
}

/// 3.11+: the location table; `unit` in code units (2 bytes).
fn location_table_line(table: &[u8], first: i64, unit: u64) -> Option<i64> {
    let mut line = first;
    let mut address = 0u64;
    let mut at = 0usize;
    let varint = |at: &mut usize| -> Option<u64> {
        let mut value = 0u64;
        let mut shift = 0;
        loop {
            let byte = *table.get(*at)?;
            *at += 1;
            value |= u64::from(byte & 63) << shift;
            if byte & 64 == 0 || shift > 56 {
                return Some(value);
            }
            shift += 6;
        }
    };
    let signed = |value: u64| -> i64 {
        if value & 1 == 1 {
            -((value >> 1) as i64)
        } else {
            (value >> 1) as i64
        }
    };
    while at < table.len() {
        let head = table[at];
        at += 1;
        let code = (head >> 3) & 15;
        let length = u64::from(head & 7) + 1;
        let this_line = match code {
            15 => None,
            14 => {
                line += signed(varint(&mut at)?);
                varint(&mut at)?;
                varint(&mut at)?;
                varint(&mut at)?;
                Some(line)
            }
            13 => {
                line += signed(varint(&mut at)?);
                Some(line)
            }
            10..=12 => {
                line += i64::from(code - 10);
                at += 2;
                Some(line)
            }
            _ => {
                at += 1;
                Some(line)
            }
        };
        if unit < address + length {
            return this_line;
        }
        address += length;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn python_stacks_decode_with_their_cut() {
        let words = [
            0x10,
            5 | (u64::from(PY_FRAME_ENTERED_FROM_C) << 32),
            0x20,
            7,
            TRUNCATED,
        ];
        let (frames, truncated) = decode_stack(&words);
        assert!(truncated);
        assert_eq!(frames.len(), 2);
        assert!(frames[0].entered_from_c() && !frames[1].entered_from_c());
        assert_eq!(frames[1].instruction, 7);
    }

    #[test]
    fn lnotab_and_location_tables_give_lines() {
        // 3.8: line 10 at 0, +2 lines from byte 6, +1 from byte 10.
        assert_eq!(lnotab_line(&[6, 2, 4, 1], 10, 0), Some(10));
        assert_eq!(lnotab_line(&[6, 2, 4, 1], 10, 8), Some(12));
        assert_eq!(lnotab_line(&[6, 2, 4, 1], 10, 12), Some(13));
        // 3.10: 4 bytes on line +1, 6 bytes with none, 2 bytes +2.
        let table = [4, 1, 6, 0x80, 2, 2];
        assert_eq!(linetable_3_10_line(&table, 20, 2), Some(21));
        assert_eq!(linetable_3_10_line(&table, 20, 5), None);
        assert_eq!(linetable_3_10_line(&table, 20, 10), Some(23));
        // 3.11+: a no-column entry (+1 line) of 2 units, then a short one of 3.
        let table = [0x80 | (13 << 3) | 1, 2, 0x80 | (1 << 3) | 2, 0];
        assert_eq!(location_table_line(&table, 30, 0), Some(31));
        assert_eq!(location_table_line(&table, 30, 4), Some(31));
        assert_eq!(location_table_line(&table, 30, 5), None);
    }
}
