//! The types of a function's parameters and return value, as DWARF describes them: an arena
//! of resolved types (typedefs and qualifiers looked through) that the planner walks to
//! decide what to fetch and the decoder walks to turn bytes into values.
//!
//! Types refer to each other by [`TypeId`], so self-referential structs (linked lists) are
//! finite. Language-specific shapes (Rust `&str`, `String`, `Vec<T>`, slices; C++
//! `std::string`) are recognised here by name and structure.

/// Index of a type in its [`Types`] arena.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TypeId(pub u32);

/// The source language of a compile unit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Language {
    C,
    Cpp,
    Rust,
    Other,
}

/// A resolved type.
#[derive(Clone, Debug, PartialEq)]
pub struct TypeDef {
    /// The type's name, qualified with its namespaces for C++ and Rust (`alloc::string::String`),
    /// or a C-like rendering for unnamed types (`struct point *`, `int[4]`).
    pub name: String,
    /// `DW_AT_byte_size`, or what it follows from (arrays); `None` when unknown.
    pub size: Option<u64>,
    pub kind: TypeKind,
}

/// What a type is.
#[derive(Clone, Debug, PartialEq)]
pub enum TypeKind {
    Void,
    /// A signed or unsigned integer (also C++ `wchar_t`, `char16_t`).
    Int {
        signed: bool,
    },
    Bool,
    /// A C/C++ `char`, `signed char` or `unsigned char` (one byte).
    Char {
        signed: bool,
    },
    /// A Rust `char`: a Unicode scalar value in 4 bytes.
    RustChar,
    Float,
    /// A C-like enum (also fieldless Rust enums); enumerators as written.
    Enum {
        signed: bool,
        enumerators: Vec<(String, i128)>,
    },
    /// A pointer, or a C++ / Rust reference (`reference: true`) or `Box`.
    Pointer {
        pointee: TypeId,
        reference: bool,
    },
    /// A struct or class; Rust enums with data are structs with a [`VariantPart`].
    Struct {
        members: Vec<Member>,
        variants: Option<VariantPart>,
        /// Template / generic type parameters (`T` of `Vec<T>`).
        template: Vec<(String, TypeId)>,
        /// C++: passed and returned through a hidden pointer (non-trivial copy or destructor).
        by_reference: bool,
    },
    Union {
        members: Vec<Member>,
    },
    Array {
        element: TypeId,
        count: Option<u64>,
    },
    Function,
    /// Something not decoded (the name says what).
    Unknown,
}

/// A data member at a byte offset.
#[derive(Clone, Debug, PartialEq)]
pub struct Member {
    /// The member's name; `__0`, `__1`, … for Rust tuple fields, `<anonymous>` when none.
    pub name: String,
    pub offset: u64,
    pub ty: TypeId,
    /// `(bit offset from `offset`, bit size)` of a bit field.
    pub bits: Option<(u64, u64)>,
}

/// The variants of a Rust enum (DWARF `DW_TAG_variant_part`).
#[derive(Clone, Debug, PartialEq)]
pub struct VariantPart {
    /// The member holding the discriminant (or the niche); `None` with a single variant.
    pub discr: Option<Member>,
    pub variants: Vec<Variant>,
}

/// One variant: its discriminant value (`None` for the default / dataful variant) and its
/// payload, a member whose type is a struct of the variant's fields.
#[derive(Clone, Debug, PartialEq)]
pub struct Variant {
    pub discr_value: Option<u64>,
    pub member: Member,
}

/// A string or slice held as pointer + length (Rust `&str`, `&[T]`, `String`, `Vec<T>`;
/// C++ `std::string`): where the two live inside the value, and what the elements are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PtrLen {
    /// Byte offset of the data pointer inside the value.
    pub ptr_offset: u64,
    /// Byte offset of the element count inside the value.
    pub len_offset: u64,
    pub element: TypeId,
    /// Elements are UTF-8 text (`&str`, `String`, `std::string`).
    pub text: bool,
}

/// An arena of types.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Types {
    defs: Vec<TypeDef>,
}

/// Hostile DWARF must not make us build unbounded type graphs.
pub const MAX_TYPES: usize = 20_000;

impl Types {
    pub fn get(&self, id: TypeId) -> &TypeDef {
        &self.defs[id.0 as usize]
    }

    /// Adds a type; `None` when the arena is full.
    pub fn push(&mut self, def: TypeDef) -> Option<TypeId> {
        if self.defs.len() >= MAX_TYPES {
            return None;
        }
        self.defs.push(def);
        Some(TypeId(self.defs.len() as u32 - 1))
    }

    pub(crate) fn set(&mut self, id: TypeId, def: TypeDef) {
        self.defs[id.0 as usize] = def;
    }

    pub fn len(&self) -> usize {
        self.defs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.defs.is_empty()
    }

    /// The size of a type in bytes, when known.
    pub fn size(&self, id: TypeId) -> Option<u64> {
        let def = self.get(id);
        match &def.kind {
            TypeKind::Void | TypeKind::Function => Some(0),
            TypeKind::Pointer { .. } => Some(def.size.unwrap_or(8)),
            _ => def.size,
        }
    }

    /// A pointer to plain `char`: a C string. (`unsigned char *` and `uint8_t *` are
    /// usually bytes, and stay pointers.)
    pub fn is_c_string(&self, id: TypeId) -> bool {
        match self.get(id).kind {
            TypeKind::Pointer {
                pointee,
                reference: false,
            } => self.is_text_char(pointee),
            _ => false,
        }
    }

    /// Plain `char`, the element type of C text.
    pub fn is_text_char(&self, id: TypeId) -> bool {
        let def = self.get(id);
        matches!(def.kind, TypeKind::Char { .. }) && def.name == "char"
    }

    /// A struct member by name.
    pub fn member(&self, id: TypeId, name: &str) -> Option<&Member> {
        match &self.get(id).kind {
            TypeKind::Struct { members, .. } | TypeKind::Union { members } => {
                members.iter().find(|m| m.name == name)
            }
            _ => None,
        }
    }

    /// Recognises values held as pointer + length. `lang` guards the name-based rules.
    pub fn ptr_len(&self, id: TypeId, lang: Language) -> Option<PtrLen> {
        let def = self.get(id);
        if !matches!(def.kind, TypeKind::Struct { .. }) {
            return None;
        }
        match lang {
            Language::Rust => self.rust_ptr_len(id),
            Language::Cpp => self.cpp_string(id),
            _ => None,
        }
    }

    fn rust_ptr_len(&self, id: TypeId) -> Option<PtrLen> {
        let def = self.get(id);
        // `&str`, `&[T]`, `&mut [T]`, `*const [T]`: { data_ptr, length }.
        if let (Some(ptr), Some(len)) = (self.member(id, "data_ptr"), self.member(id, "length")) {
            let TypeKind::Pointer { pointee, .. } = self.get(ptr.ty).kind else {
                return None;
            };
            let text = def.name.ends_with("str");
            return Some(PtrLen {
                ptr_offset: ptr.offset,
                len_offset: len.offset,
                element: pointee,
                text,
            });
        }
        let head = def.name.split('<').next().unwrap_or_default();
        let base = head.rsplit("::").next().unwrap_or(head);
        match base {
            "String" => {
                let vec = self.member(id, "vec")?;
                let inner = self.rust_ptr_len(vec.ty)?;
                Some(PtrLen {
                    ptr_offset: vec.offset + inner.ptr_offset,
                    len_offset: vec.offset + inner.len_offset,
                    element: inner.element,
                    text: true,
                })
            }
            "Vec" => {
                let buf = self.member(id, "buf")?;
                let len = self.member(id, "len")?;
                let element = self.template(id, "T")?;
                let ptr_offset = buf.offset + self.first_pointer(buf.ty, 0)?;
                Some(PtrLen {
                    ptr_offset,
                    len_offset: len.offset,
                    element,
                    text: false,
                })
            }
            _ => None,
        }
    }

    /// libstdc++ `std::__cxx11::basic_string<char>`: `_M_dataplus._M_p` and
    /// `_M_string_length`.
    fn cpp_string(&self, id: TypeId) -> Option<PtrLen> {
        let dataplus = self.member(id, "_M_dataplus")?;
        let len = self.member(id, "_M_string_length")?;
        let p = self.member(dataplus.ty, "_M_p")?;
        let TypeKind::Pointer { pointee, .. } = self.get(p.ty).kind else {
            return None;
        };
        if !matches!(self.get(pointee).kind, TypeKind::Char { .. }) {
            return None;
        }
        Some(PtrLen {
            ptr_offset: dataplus.offset + p.offset,
            len_offset: len.offset,
            element: pointee,
            text: true,
        })
    }

    /// A generic parameter of a struct by name.
    pub fn template(&self, id: TypeId, name: &str) -> Option<TypeId> {
        match &self.get(id).kind {
            TypeKind::Struct { template, .. } => {
                template.iter().find(|(n, _)| n == name).map(|(_, t)| *t)
            }
            _ => None,
        }
    }

    /// Offset of the first pointer found depth-first in a struct (the data pointer of a
    /// `RawVec`, whatever its nesting in this Rust version).
    fn first_pointer(&self, id: TypeId, depth: u32) -> Option<u64> {
        if depth > 8 {
            return None;
        }
        match &self.get(id).kind {
            TypeKind::Pointer { .. } => Some(0),
            TypeKind::Struct { members, .. } => members
                .iter()
                .find_map(|m| Some(m.offset + self.first_pointer(m.ty, depth + 1)?)),
            _ => None,
        }
    }

    /// Rust tuples and tuple structs/variants name their fields `__0`, `__1`, …
    pub fn is_tuple_like(&self, id: TypeId) -> bool {
        match &self.get(id).kind {
            TypeKind::Struct {
                members, variants, ..
            } => {
                variants.is_none()
                    && !members.is_empty()
                    && members
                        .iter()
                        .enumerate()
                        .all(|(i, m)| m.name == format!("__{i}"))
            }
            _ => false,
        }
    }

    /// The scalar leaves of a type, `(offset, size, is_float)`, flattening structs, arrays
    /// and every variant of an enum; `None` when the type is not fully known.
    pub fn leaves(&self, id: TypeId) -> Option<Vec<(u64, u64, bool)>> {
        let mut out = Vec::new();
        self.collect_leaves(id, 0, 0, &mut out)?;
        out.sort_by_key(|l| (l.0, l.1));
        out.dedup();
        Some(out)
    }

    fn collect_leaves(
        &self,
        id: TypeId,
        at: u64,
        depth: u32,
        out: &mut Vec<(u64, u64, bool)>,
    ) -> Option<()> {
        if depth > 16 || out.len() > 64 {
            return None;
        }
        let def = self.get(id);
        match &def.kind {
            TypeKind::Int { .. }
            | TypeKind::Bool
            | TypeKind::Char { .. }
            | TypeKind::RustChar
            | TypeKind::Enum { .. }
            | TypeKind::Pointer { .. } => out.push((at, self.size(id)?, false)),
            TypeKind::Float => out.push((at, def.size?, true)),
            TypeKind::Struct {
                members, variants, ..
            } => {
                for m in members {
                    if m.bits.is_some() {
                        // A bit field's storage unit is an integer.
                        out.push((at + m.offset, self.size(m.ty)?, false));
                    } else {
                        self.collect_leaves(m.ty, at + m.offset, depth + 1, out)?;
                    }
                }
                if let Some(part) = variants {
                    if let Some(d) = &part.discr {
                        self.collect_leaves(d.ty, at + d.offset, depth + 1, out)?;
                    }
                    for v in &part.variants {
                        self.collect_leaves(v.member.ty, at + v.member.offset, depth + 1, out)?;
                    }
                }
            }
            TypeKind::Union { members } => {
                for m in members {
                    self.collect_leaves(m.ty, at + m.offset, depth + 1, out)?;
                }
            }
            TypeKind::Array { element, count } => {
                let size = self.size(*element)?;
                for i in 0..(*count)? {
                    self.collect_leaves(*element, at + i * size, depth + 1, out)?;
                }
            }
            TypeKind::Void => {}
            TypeKind::Function | TypeKind::Unknown => return None,
        }
        Some(())
    }
}
