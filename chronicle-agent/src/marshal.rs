//! Turns captured arguments (export-format JSON) back into a call: the bytes of each value
//! laid out as the new binary's DWARF types say, the data they point to placed in a scratch
//! area of the child, and each argument assigned to registers or the stack as the x86-64
//! calling conventions say (SysV for C and C++, rustc's for Rust). Pure computation: the
//! caller writes the result into the child.

use chronicle_symbols::plan::{returns_in_memory, rust_scalars};
use chronicle_symbols::{Language, Signature, TypeId, TypeKind, Types};
use serde_json::{Map, Value as Json};

/// Integer argument registers, in order, as DWARF numbers: rdi, rsi, rdx, rcx, r8, r9.
pub const INT_ARG_REGS: [u8; 6] = [5, 4, 1, 2, 8, 9];

/// Bytes reserved for every C string argument, so that a function writing into a `char *`
/// buffer (whose captured value is only its contents) has room.
const MIN_C_STRING_ROOM: usize = 256;

/// An argument that cannot be passed: where, and why.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("cannot pass {path}: {reason}")]
pub struct MarshalError {
    pub path: String,
    pub reason: String,
}

/// Bump allocation in the child's scratch area, built locally and written in one go.
#[derive(Debug)]
pub struct Scratch {
    base: u64,
    capacity: usize,
    pub bytes: Vec<u8>,
}

impl Scratch {
    pub fn new(base: u64, capacity: usize) -> Self {
        Scratch {
            base,
            capacity,
            bytes: Vec::new(),
        }
    }

    /// The child address of `bytes[0]`.
    pub fn base(&self) -> u64 {
        self.base
    }

    /// Reserves `size` zeroed bytes aligned to `align`; returns their child address.
    pub fn alloc(&mut self, size: u64, align: u64, path: &str) -> Result<u64, MarshalError> {
        let start = (self.bytes.len() as u64).next_multiple_of(align.max(1));
        let end = start + size.max(1);
        if end > self.capacity as u64 {
            return Err(MarshalError {
                path: path.to_owned(),
                reason: format!(
                    "the arguments need more than the {} KiB scratch area",
                    self.capacity / 1024
                ),
            });
        }
        self.bytes.resize(end as usize, 0);
        Ok(self.base + start)
    }

    fn write(&mut self, address: u64, data: &[u8]) {
        let at = (address - self.base) as usize;
        self.bytes[at..at + data.len()].copy_from_slice(data);
    }
}

/// Memory from the child's own allocator, for values the callee takes ownership of and
/// will free (a Rust `Box` passed by value).
pub trait Heap {
    /// `size` bytes aligned to `align` from the allocator the callee will free them with.
    fn alloc(&mut self, size: u64, align: u64) -> Result<u64, String>;
}

/// A call ready to be made: register values and the stack arguments' image.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CallSetup {
    /// Integer argument registers in order (rdi, rsi, ...).
    pub int_regs: Vec<u64>,
    /// SSE argument registers in order (xmm0, ...), low 8 bytes each.
    pub sse_regs: Vec<u64>,
    /// Stack arguments, from the lowest address (just above the return address).
    pub stack: Vec<u8>,
    /// Where the callee writes a returned value in memory (already in `int_regs[0]`).
    pub sret: Option<u64>,
    /// Bytes to write into blocks from the child's allocator.
    pub heap_writes: Vec<(u64, Vec<u8>)>,
}

/// Lays out the call of `sig` with `args` (parameter name → captured value).
pub fn marshal(
    sig: &Signature,
    args: &Map<String, Json>,
    scratch: &mut Scratch,
    heap: &mut dyn Heap,
) -> Result<CallSetup, MarshalError> {
    let types = &sig.types;
    let mut m = Marshaller {
        types,
        lang: sig.language,
        scratch,
        heap,
        owned: false,
        heap_writes: Vec::new(),
    };
    let mut setup = CallSetup::default();
    if let Some(ret) = sig.ret
        && returns_in_memory(types, ret, sig.language)
    {
        let size = types.size(ret).unwrap_or(8);
        let at = m.scratch.alloc(size, 16, "return")?;
        setup.int_regs.push(at);
        setup.sret = Some(at);
    }
    if sig.variadic {
        return Err(MarshalError {
            path: sig.name.clone(),
            reason: "variadic functions are not replayed: the captured call does not say \
                     what the `...` held"
                .into(),
        });
    }
    for param in &sig.params {
        let value = args.get(&param.name).ok_or_else(|| MarshalError {
            path: param.name.clone(),
            reason: "the captured call has no such argument (did the signature change?)".into(),
        })?;
        let size = types.size(param.ty).ok_or_else(|| MarshalError {
            path: param.name.clone(),
            reason: format!("type {} has no known size", types.get(param.ty).name),
        })?;
        let mut image = vec![0u8; size as usize];
        // A parameter passed by value belongs to the callee, with what it owns.
        m.owned = true;
        m.encode(param.ty, value, &mut image, &param.name)?;
        m.place(param.ty, image, &mut setup, &param.name)?;
    }
    setup.heap_writes = m.heap_writes;
    Ok(setup)
}

struct Marshaller<'a> {
    types: &'a Types,
    lang: Language,
    scratch: &'a mut Scratch,
    heap: &'a mut dyn Heap,
    /// The value being encoded will be dropped by the callee (not behind a borrow).
    owned: bool,
    heap_writes: Vec<(u64, Vec<u8>)>,
}

enum Class {
    Int,
    Sse,
}

impl Marshaller<'_> {
    /// Assigns one argument's bytes to registers or the stack.
    fn place(
        &mut self,
        ty: TypeId,
        image: Vec<u8>,
        setup: &mut CallSetup,
        path: &str,
    ) -> Result<(), MarshalError> {
        let size = image.len() as u64;
        if size == 0 {
            return Ok(());
        }
        let def = self.types.get(ty);
        if let TypeKind::Float = def.kind
            && size > 8
        {
            return Err(MarshalError {
                path: path.to_owned(),
                reason: "long double arguments are not replayed".into(),
            });
        }
        let word = |bytes: &[u8]| {
            let mut w = [0u8; 8];
            w[..bytes.len()].copy_from_slice(bytes);
            u64::from_le_bytes(w)
        };
        if self.lang == Language::Rust {
            // rustc: one or two scalars go as one or two arguments; other values of up to
            // 8 bytes as an integer; anything bigger by pointer to a copy.
            if let Some(scalars) = rust_scalars(self.types, ty) {
                for (offset, len, float) in scalars {
                    let bytes = &image[offset as usize..(offset + len) as usize];
                    let class = if float { Class::Sse } else { Class::Int };
                    push(setup, class, word(bytes), bytes.len());
                }
                return Ok(());
            }
            if size <= 8 {
                push(setup, Class::Int, word(&image), 8);
                return Ok(());
            }
            let at = self.copy_to_scratch(&image, path)?;
            push(setup, Class::Int, at, 8);
            return Ok(());
        }
        let by_reference = matches!(
            def.kind,
            TypeKind::Struct {
                by_reference: true,
                ..
            }
        );
        if by_reference {
            let at = self.copy_to_scratch(&image, path)?;
            push(setup, Class::Int, at, 8);
            return Ok(());
        }
        if size > 16 {
            push_stack(setup, &image);
            return Ok(());
        }
        // SysV: each eightbyte is SSE when every scalar in it is a float, else INTEGER; a
        // value goes to registers only when all of its eightbytes fit.
        let leaves = self.types.leaves(ty).ok_or_else(|| MarshalError {
            path: path.to_owned(),
            reason: format!("type {} is not understood", def.name),
        })?;
        let classes: Vec<Class> = (0..size.div_ceil(8))
            .map(|i| {
                let inside: Vec<_> = leaves
                    .iter()
                    .filter(|l| l.0 < i * 8 + 8 && l.0 + l.1 > i * 8)
                    .collect();
                if !inside.is_empty() && inside.iter().all(|l| l.2) {
                    Class::Sse
                } else {
                    Class::Int
                }
            })
            .collect();
        let ints = classes.iter().filter(|c| matches!(c, Class::Int)).count();
        let sses = classes.len() - ints;
        if setup.int_regs.len() + ints > 6 || setup.sse_regs.len() + sses > 8 {
            push_stack(setup, &image);
            return Ok(());
        }
        for (i, class) in classes.into_iter().enumerate() {
            let chunk = &image[i * 8..((i + 1) * 8).min(image.len())];
            match class {
                Class::Int => setup.int_regs.push(word(chunk)),
                Class::Sse => setup.sse_regs.push(word(chunk)),
            }
        }
        Ok(())
    }

    fn copy_to_scratch(&mut self, image: &[u8], path: &str) -> Result<u64, MarshalError> {
        let at = self.scratch.alloc(image.len() as u64, 16, path)?;
        self.scratch.write(at, image);
        Ok(at)
    }

    /// Writes the bytes of `value` as type `ty` into `out` (which has the type's size);
    /// pointed-to data goes to the scratch area.
    fn encode(
        &mut self,
        ty: TypeId,
        value: &Json,
        out: &mut [u8],
        path: &str,
    ) -> Result<(), MarshalError> {
        let fail = |reason: String| MarshalError {
            path: path.to_owned(),
            reason,
        };
        let def = self.types.get(ty);
        let size = out.len();
        match &def.kind {
            TypeKind::Void => Ok(()),
            TypeKind::Int { .. } | TypeKind::Bool | TypeKind::Char { .. } | TypeKind::RustChar => {
                let n = integer(value).ok_or_else(|| {
                    fail(format!("expected a number for {}, found {value}", def.name))
                })?;
                out.copy_from_slice(&n.to_le_bytes()[..size.min(16)]);
                Ok(())
            }
            TypeKind::Float => {
                let f = value
                    .as_f64()
                    .ok_or_else(|| fail(format!("expected a number, found {value}")))?;
                match size {
                    4 => out.copy_from_slice(&(f as f32).to_le_bytes()),
                    8 => out.copy_from_slice(&f.to_le_bytes()),
                    _ => return Err(fail("long double values are not replayed".into())),
                }
                Ok(())
            }
            TypeKind::Enum { enumerators, .. } => {
                let n = match value {
                    Json::String(name) => enumerators
                        .iter()
                        .find(|(e, _)| e == name)
                        .map(|(_, v)| *v)
                        .ok_or_else(|| fail(format!("{} has no enumerator {name}", def.name)))?,
                    v => integer(v)
                        .ok_or_else(|| fail(format!("expected an enumerator, found {v}")))?,
                };
                out.copy_from_slice(&n.to_le_bytes()[..size.min(16)]);
                Ok(())
            }
            TypeKind::Pointer { pointee, .. } => {
                let address = self.pointer(*pointee, ty, value, path)?;
                out.copy_from_slice(&address.to_le_bytes()[..size.min(8)]);
                Ok(())
            }
            TypeKind::Struct { .. } if self.types.ptr_len(ty, self.lang).is_some() => {
                let pl = self.types.ptr_len(ty, self.lang).expect("checked");
                let (address, count) = self.sequence(pl.element, pl.text, value, path)?;
                let put = |out: &mut [u8], at: u64, word: u64| {
                    out[at as usize..at as usize + 8].copy_from_slice(&word.to_le_bytes());
                };
                put(out, pl.ptr_offset, address);
                put(out, pl.len_offset, count);
                Ok(())
            }
            TypeKind::Struct {
                variants: Some(variants),
                ..
            } => {
                let (name, payload) = variant_of(value).ok_or_else(|| {
                    fail(format!("expected {{\"Variant\": payload}}, found {value}"))
                })?;
                let variant = variants
                    .variants
                    .iter()
                    .find(|v| v.member.name == name)
                    .ok_or_else(|| fail(format!("{} has no variant {name}", def.name)))?;
                // Fields outside the variant part (rare) are left zero.
                if let (Some(discr), Some(d)) = (&variants.discr, variant.discr_value) {
                    let dsize = self.types.size(discr.ty).unwrap_or(0) as usize;
                    let at = discr.offset as usize;
                    out[at..at + dsize].copy_from_slice(&d.to_le_bytes()[..dsize.min(8)]);
                }
                let member = &variant.member;
                let msize = self.types.size(member.ty).unwrap_or(0) as usize;
                let at = member.offset as usize;
                let inner_path = format!("{path}.{name}");
                let fields = self.variant_fields(member.ty, payload);
                self.encode(member.ty, &fields, &mut out[at..at + msize], &inner_path)
            }
            TypeKind::Struct { members, .. } => {
                for (i, member) in members.iter().enumerate() {
                    let field = match value {
                        Json::Object(map) => map.get(&member.name),
                        // Tuples and tuple structs may be written as arrays.
                        Json::Array(items) => items.get(i),
                        _ => return Err(fail(format!("expected an object, found {value}"))),
                    };
                    let field_path = format!("{path}.{}", member.name);
                    let field = field.ok_or_else(|| MarshalError {
                        path: field_path.clone(),
                        reason: "missing from the captured value".into(),
                    })?;
                    self.member(member, field, out, &field_path)?;
                }
                Ok(())
            }
            TypeKind::Union { members } => {
                let Json::Object(map) = value else {
                    return Err(fail(format!("expected an object, found {value}")));
                };
                let member = members
                    .iter()
                    .find(|m| map.contains_key(&m.name))
                    .ok_or_else(|| fail("no member of the union was captured".into()))?;
                let field_path = format!("{path}.{}", member.name);
                self.member(member, &map[&member.name], out, &field_path)
            }
            TypeKind::Array { element, .. } => {
                let esize = self.types.size(*element).unwrap_or(0) as usize;
                if self.types.is_text_char(*element) {
                    let bytes = text_bytes(value)
                        .ok_or_else(|| fail(format!("expected a string, found {value}")))?;
                    let n = bytes.len().min(size);
                    out[..n].copy_from_slice(&bytes[..n]);
                    return Ok(());
                }
                let items = value
                    .as_array()
                    .ok_or_else(|| fail(format!("expected an array, found {value}")))?;
                if esize == 0 || items.len() * esize > size {
                    return Err(fail(format!(
                        "{} elements do not fit in {}",
                        items.len(),
                        def.name
                    )));
                }
                for (i, item) in items.iter().enumerate() {
                    let item_path = format!("{path}[{i}]");
                    self.encode(
                        *element,
                        item,
                        &mut out[i * esize..(i + 1) * esize],
                        &item_path,
                    )?;
                }
                Ok(())
            }
            TypeKind::Function | TypeKind::Unknown => Err(fail(format!(
                "values of type {} are not replayed",
                def.name
            ))),
        }
    }

    /// A variant's payload as its struct of fields: a single tuple field is captured bare,
    /// several as an array.
    fn variant_fields(&self, ty: TypeId, payload: &Json) -> Json {
        let TypeKind::Struct { members, .. } = &self.types.get(ty).kind else {
            return payload.clone();
        };
        match (members.as_slice(), payload) {
            ([only], p) if only.name == "__0" && !matches!(p, Json::Array(_)) => {
                let mut map = Map::new();
                map.insert("__0".into(), p.clone());
                Json::Object(map)
            }
            ([], _) => Json::Object(Map::new()),
            _ => payload.clone(),
        }
    }

    fn member(
        &mut self,
        member: &chronicle_symbols::types::Member,
        value: &Json,
        out: &mut [u8],
        path: &str,
    ) -> Result<(), MarshalError> {
        let msize = self.types.size(member.ty).unwrap_or(0) as usize;
        let at = member.offset as usize;
        if let Some((bit_offset, bit_size)) = member.bits {
            let n = integer(value).ok_or_else(|| MarshalError {
                path: path.to_owned(),
                reason: format!("expected a number, found {value}"),
            })? as u128;
            let span = (bit_offset + bit_size).div_ceil(8) as usize;
            let end = (at + span).min(out.len());
            let mut word = [0u8; 16];
            word[..end - at].copy_from_slice(&out[at..end]);
            let mut w = u128::from_le_bytes(word);
            let mask = ((1u128 << bit_size) - 1) << bit_offset;
            w = (w & !mask) | ((n << bit_offset) & mask);
            out[at..end].copy_from_slice(&w.to_le_bytes()[..end - at]);
            return Ok(());
        }
        if at + msize > out.len() {
            return Err(MarshalError {
                path: path.to_owned(),
                reason: "member lies outside its struct".into(),
            });
        }
        self.encode(member.ty, value, &mut out[at..at + msize], path)
    }

    /// Places what a pointer points to in the scratch area; returns its child address.
    fn pointer(
        &mut self,
        pointee: TypeId,
        ty: TypeId,
        value: &Json,
        path: &str,
    ) -> Result<u64, MarshalError> {
        let fail = |reason: String| MarshalError {
            path: path.to_owned(),
            reason,
        };
        if value.is_null() {
            return Ok(0);
        }
        if let Some(address) = value
            .as_object()
            .and_then(|m| m.get("ptr"))
            .filter(|_| value.as_object().is_some_and(|m| m.len() == 1))
        {
            return Err(fail(format!(
                "the pointer {address} was not followed when the call was captured, so what \
                 it pointed to is unknown (raise --max-depth when capturing)"
            )));
        }
        if self.types.is_c_string(ty) {
            let mut bytes = text_bytes(value)
                .ok_or_else(|| fail(format!("expected a string, found {value}")))?;
            // A `char *` may be an output buffer whose size the capture does not know:
            // leave room after the string.
            bytes.resize(bytes.len().max(MIN_C_STRING_ROOM - 1) + 1, 0);
            return self.copy_to_scratch(&bytes, path);
        }
        let size = self.types.size(pointee).filter(|&s| s > 0).ok_or_else(|| {
            fail(format!(
                "points to {}, whose size is unknown",
                self.types.get(pointee).name
            ))
        })?;
        // A captured array behind a pointer is the elements starting there.
        let items: Vec<&Json> = match value {
            Json::Array(items)
                if !matches!(self.types.get(pointee).kind, TypeKind::Array { .. }) =>
            {
                items.iter().collect()
            }
            v => vec![v],
        };
        // A `Box` the callee owns is freed by it: it must come from the child's allocator.
        // Anything else behind a pointer is borrowed.
        let boxed = self.lang == Language::Rust
            && self.types.get(ty).name.starts_with("alloc::boxed::Box<");
        let inner_owned = boxed && self.owned;
        let owned = std::mem::replace(&mut self.owned, inner_owned);
        let total = size * items.len() as u64;
        let at = if self.owned {
            self.heap.alloc(total, 16).map_err(fail)?
        } else {
            self.scratch.alloc(total, 16, path)?
        };
        let mut block = vec![0u8; total as usize];
        for (i, item) in items.iter().enumerate() {
            let item_path = if items.len() > 1 {
                format!("{path}[{i}]")
            } else {
                path.to_owned()
            };
            let range = i * size as usize..(i + 1) * size as usize;
            if let Err(e) = self.encode(pointee, item, &mut block[range], &item_path) {
                self.owned = owned;
                return Err(e);
            }
        }
        if self.owned {
            self.heap_writes.push((at, block));
        } else {
            self.scratch.write(at, &block);
        }
        self.owned = owned;
        Ok(at)
    }

    /// The elements of a pointer + length value (`&str`, `Vec<T>`, `std::string`) in the
    /// scratch area: `(address, element count)`.
    fn sequence(
        &mut self,
        element: TypeId,
        text: bool,
        value: &Json,
        path: &str,
    ) -> Result<(u64, u64), MarshalError> {
        if text {
            let bytes = text_bytes(value).ok_or_else(|| MarshalError {
                path: path.to_owned(),
                reason: format!("expected a string, found {value}"),
            })?;
            let at = self.copy_to_scratch(&bytes, path)?;
            return Ok((at, bytes.len() as u64));
        }
        let items = value.as_array().ok_or_else(|| MarshalError {
            path: path.to_owned(),
            reason: format!("expected an array, found {value}"),
        })?;
        let esize = self.types.size(element).unwrap_or(0);
        let at = self.scratch.alloc(esize * items.len() as u64, 16, path)?;
        for (i, item) in items.iter().enumerate() {
            let mut image = vec![0u8; esize as usize];
            self.encode(element, item, &mut image, &format!("{path}[{i}]"))?;
            self.scratch.write(at + i as u64 * esize, &image);
        }
        Ok((at, items.len() as u64))
    }
}

fn push(setup: &mut CallSetup, class: Class, word: u64, len: usize) {
    match class {
        Class::Int if setup.int_regs.len() < 6 => setup.int_regs.push(word),
        Class::Sse if setup.sse_regs.len() < 8 => setup.sse_regs.push(word),
        _ => push_stack(setup, &word.to_le_bytes()[..len.max(1)]),
    }
}

fn push_stack(setup: &mut CallSetup, bytes: &[u8]) {
    setup.stack.extend_from_slice(bytes);
    let padded = setup.stack.len().next_multiple_of(8);
    setup.stack.resize(padded, 0);
}

/// A JSON number (or bool, or one-character string) as the bits of an integer.
fn integer(value: &Json) -> Option<i128> {
    match value {
        Json::Number(n) => n
            .as_i64()
            .map(i128::from)
            .or_else(|| n.as_u64().map(i128::from)),
        Json::Bool(b) => Some(i128::from(*b)),
        Json::String(s) => {
            let mut chars = s.chars();
            let c = chars.next()?;
            chars.next().is_none().then_some(c as i128)
        }
        _ => None,
    }
}

/// The bytes of a captured string: a JSON string, or `{"bytes": "<hex>"}`.
fn text_bytes(value: &Json) -> Option<Vec<u8>> {
    match value {
        Json::String(s) => Some(s.as_bytes().to_vec()),
        Json::Object(map) if map.len() == 1 => {
            let hex = map.get("bytes")?.as_str()?;
            (0..hex.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
                .collect()
        }
        _ => None,
    }
}

/// `{"Variant": payload}` (or a bare `"Variant"` for a unit variant).
fn variant_of(value: &Json) -> Option<(&str, &Json)> {
    match value {
        Json::Object(map) if map.len() == 1 => {
            let (name, payload) = map.iter().next()?;
            Some((name.as_str(), payload))
        }
        Json::String(name) => Some((name.as_str(), &Json::Null)),
        _ => None,
    }
}
