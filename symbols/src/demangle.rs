//! Symbol name demangling: Rust (legacy and v0) and C++ (Itanium), plus the helpers that
//! name matching needs (version suffixes, C++ parameter lists).

/// Demangles a symbol name, or `None` when it is not a Rust or C++ mangled name.
///
/// Rust names are printed without their hash (`my_app::orders::process_order`), C++ names in
/// full with their parameter list (`orders::process(int, char const*)`). A versioned dynamic
/// symbol suffix (`@@GLIBC_2.2.5`, `@VER`) is ignored.
///
/// ```
/// use chronicle_symbols::demangle;
/// assert_eq!(
///     demangle("_ZN6my_app6orders13process_order17h0123456789abcdefE").as_deref(),
///     Some("my_app::orders::process_order"),
/// );
/// assert_eq!(demangle("_Z3addii").as_deref(), Some("add(int, int)"));
/// assert_eq!(demangle("main"), None);
/// ```
pub fn demangle(name: &str) -> Option<String> {
    let name = strip_version(name);
    // Legacy Rust symbols also start with `_ZN`, so Rust goes first. A legacy Rust symbol
    // always ends in a hash segment; without one the name is C++ (`_ZN3foo3barE` is a C++
    // variable), which is why the hash-less and the alternate display must differ.
    if let Ok(rust) = rustc_demangle::try_demangle(name) {
        let without_hash = format!("{rust:#}");
        if name.starts_with("_R") || name.starts_with("__R") || without_hash != rust.to_string() {
            return Some(without_hash);
        }
    }
    if name.starts_with("_Z") {
        let symbol = cpp_demangle::Symbol::new(name).ok()?;
        return symbol.demangle().ok();
    }
    None
}

/// The name without a symbol version suffix: `memcpy@@GLIBC_2.14` → `memcpy`.
pub fn strip_version(name: &str) -> &str {
    match name.find('@') {
        Some(at) if at > 0 => &name[..at],
        _ => name,
    }
}

/// A demangled C++ name without its trailing parameter list and qualifiers:
/// `ns::f(int, char const*) const` → `ns::f`. `None` when there is no parameter list.
pub fn without_params(demangled: &str) -> Option<&str> {
    let close = demangled.rfind(')')?;
    // Only `const`, `volatile`, `&`, `&&` and ABI tags may follow the parameter list.
    let tail = demangled[close + 1..].trim();
    let tail_ok = tail
        .split_whitespace()
        .all(|word| matches!(word, "const" | "volatile" | "&" | "&&") || word.starts_with("[abi:"));
    if !tail_ok {
        return None;
    }
    let mut depth = 0usize;
    for (i, c) in demangled[..=close].char_indices().rev() {
        match c {
            ')' => depth += 1,
            '(' => {
                depth -= 1;
                if depth == 0 {
                    let head = demangled[..i].trim_end();
                    return (!head.is_empty()).then_some(head);
                }
            }
            _ => {}
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::{demangle, without_params};

    #[track_caller]
    fn check(mangled: &str, expect: Option<&str>) {
        assert_eq!(demangle(mangled).as_deref(), expect, "demangling {mangled}");
    }

    #[test]
    fn names() {
        check(
            "_ZN6my_app6orders13process_order17h0123456789abcdefE",
            Some("my_app::orders::process_order"),
        );
        // Rust v0, with a crate disambiguator that the short form leaves out.
        check("_RNvCs1234_7mycrate3foo", Some("mycrate::foo"));
        check(
            "_RNvNtCs1234_6my_app6orders13process_order",
            Some("my_app::orders::process_order"),
        );
        check(
            "_ZN6orders7processEPKc",
            Some("orders::process(char const*)"),
        );
        check(
            "_Z8transferPKcS0_l",
            Some("transfer(char const*, char const*, long)"),
        );
        // A C++ variable has no hash segment: not Rust.
        check("_ZN3foo3barE", Some("foo::bar"));
        check("_Z3addii@@LIBFOO_1.0", Some("add(int, int)"));
        check("malloc", None);
        check("malloc@@GLIBC_2.2.5", None);
        check("_Znot a symbol", None);
    }

    #[test]
    fn params() {
        assert_eq!(without_params("add(int, int)"), Some("add"));
        assert_eq!(without_params("ns::C::get() const"), Some("ns::C::get"));
        assert_eq!(
            without_params("f<int (*)(int)>(int (*)(int))"),
            Some("f<int (*)(int)>")
        );
        assert_eq!(
            without_params("ns::C::operator()(int)"),
            Some("ns::C::operator()")
        );
        assert_eq!(without_params("plain"), None);
        assert_eq!(without_params("foo::bar"), None);
    }
}
