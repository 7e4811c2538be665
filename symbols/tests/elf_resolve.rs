//! ELF symbols, build IDs, file offsets and name resolution on programs built at test time.

mod common;

use std::path::Path;

use chronicle_symbols::{ElfFile, ElfKind, ProcessMaps, ResolveError, resolve};
use common::{open, run};
use object::{Object, ObjectSection};

/// Resolves `query` to exactly one function and returns its demangled name.
#[track_caller]
fn check_resolves(objects: &[ElfFile], query: &str, expect_demangled: &str) -> String {
    let found = resolve(query, objects).unwrap_or_else(|e| panic!("{query}: {e}"));
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].symbol.demangled, expect_demangled, "query {query}");
    found[0].symbol.name.clone()
}

#[track_caller]
fn check_ambiguous(objects: &[ElfFile], query: &str, expect: &[&str]) {
    match resolve(query, objects) {
        Err(ResolveError::Ambiguous {
            query: q,
            mut candidates,
        }) => {
            assert_eq!(q, query);
            candidates.sort();
            assert_eq!(candidates, expect);
        }
        other => panic!("{query}: expected an ambiguity, got {other:?}"),
    }
}

#[track_caller]
fn check_not_found(objects: &[ElfFile], query: &str, expect_suggestions: &[&str]) -> String {
    match resolve(query, objects) {
        Err(e @ ResolveError::NotFound { .. }) => {
            let ResolveError::NotFound {
                suggestions,
                searched,
                ..
            } = &e
            else {
                unreachable!()
            };
            assert_eq!(suggestions, expect_suggestions, "query {query}");
            assert_eq!(searched.len(), objects.len());
            e.to_string()
        }
        other => panic!("{query}: expected not found, got {other:?}"),
    }
}

#[test]
fn c_resolution() {
    let path = common::c_program();
    let objects = [open(&path)];
    assert_eq!(check_resolves(&objects, "transfer", "transfer"), "transfer");
    check_resolves(&objects, "process_order", "process_order");
    // Two `static int helper` in two files are different functions with one name.
    match resolve("helper", &objects) {
        Err(ResolveError::Ambiguous { candidates, .. }) => {
            assert_eq!(candidates.len(), 2);
            assert!(
                candidates
                    .iter()
                    .all(|c| c.starts_with("helper [helper at 0x")),
                "{candidates:?}"
            );
        }
        other => panic!("expected an ambiguity, got {other:?}"),
    }
    let message = check_not_found(&objects, "proces_order", &["process_order"]);
    assert_eq!(
        message,
        format!(
            "no function `proces_order` in {}; closest matches: process_order",
            path.display()
        )
    );
    // Names containing the query come first, shortest first.
    check_not_found(&objects, "process", &["process_order", "process_payment"]);
    let message = check_not_found(&objects, "zzzzzzzzzz", &[]);
    assert!(
        message.ends_with("; list the functions with `chronicle symbols BINARY`"),
        "{message}"
    );
}

#[test]
fn not_found_counts_shared_libraries() {
    let objects = [open(&common::c_program()), open(&common::cpp_program())];
    let err = resolve("nope_nope_nope", &objects).unwrap_err();
    assert!(
        err.to_string().contains(" (and 1 shared library);"),
        "{err}"
    );
}

#[test]
fn cpp_resolution() {
    let objects = [open(&common::cpp_program())];
    check_resolves(&objects, "_ZN4shop7processEi", "shop::process(int)");
    check_resolves(&objects, "shop::process(int)", "shop::process(int)");
    check_resolves(
        &objects,
        "process(char const*)",
        "shop::process(char const*)",
    );
    check_resolves(
        &objects,
        "process_order",
        "shop::orders::process_order(long, unsigned short)",
    );
    check_resolves(
        &objects,
        "orders::process_order",
        "shop::orders::process_order(long, unsigned short)",
    );
    check_resolves(
        &objects,
        "shop::Cart::total",
        "shop::Cart::total(int) const",
    );
    check_resolves(
        &objects,
        "Cart::total(int) const",
        "shop::Cart::total(int) const",
    );
    check_ambiguous(
        &objects,
        "shop::process",
        &["shop::process(char const*)", "shop::process(int)"],
    );
    check_ambiguous(
        &objects,
        "process",
        &["shop::process(char const*)", "shop::process(int)"],
    );
    // A suffix must start at a `::` boundary.
    check_not_found(&objects, "rocess_order", &["shop::orders::process_order"]);
    let err = resolve("shop::process", &objects).unwrap_err();
    assert_eq!(
        err.to_string(),
        "`shop::process` matches 2 functions: shop::process(int), shop::process(char const*); \
         pass a longer path or the mangled name, or FILE:NAME for the one in FILE"
    );
}

#[test]
fn rust_resolution() {
    let objects = [open(&common::rust_program())];
    let mangled = check_resolves(
        &objects,
        "orders::process_order",
        "my_app::orders::process_order",
    );
    assert!(
        mangled.starts_with("_ZN6my_app6orders13process_order17h"),
        "{mangled}"
    );
    check_resolves(&objects, &mangled, "my_app::orders::process_order");
    check_resolves(
        &objects,
        "my_app::payments::process_order",
        "my_app::payments::process_order",
    );
    check_ambiguous(
        &objects,
        "process_order",
        &[
            "my_app::orders::process_order",
            "my_app::payments::process_order",
        ],
    );
    // `s::process_order` is not a segment suffix of either.
    check_not_found(
        &objects,
        "s::process_order",
        &[
            "my_app::orders::process_order",
            "my_app::payments::process_order",
        ],
    );
}

#[test]
fn rust_v0_resolution() {
    let objects = [open(&common::rust_program_v0())];
    let mangled = check_resolves(
        &objects,
        "orders::process_order",
        "my_app::orders::process_order",
    );
    assert!(mangled.starts_with("_RNvNtCs"), "{mangled}");
    check_resolves(&objects, &mangled, "my_app::orders::process_order");
}

#[test]
fn symbols_are_deduplicated_and_demangled() {
    let elf = open(&common::cpp_program());
    let main: Vec<_> = elf
        .functions()
        .iter()
        .filter(|f| f.name == "main")
        .collect();
    assert_eq!(main.len(), 1);
    assert!(main[0].size > 0);
    let total = elf
        .functions()
        .iter()
        .find(|f| f.name == "_ZNK4shop4Cart5totalEi")
        .unwrap();
    assert_eq!(total.demangled, "shop::Cart::total(int) const");
    // Defined functions only: `printf` is imported, not defined here.
    assert!(!elf.functions().iter().any(|f| f.name.starts_with("printf")));
}

#[track_caller]
fn readelf_build_id(path: &Path) -> String {
    let notes = run("readelf", &["-n", path.to_str().unwrap()]);
    let line = notes
        .lines()
        .find_map(|l| l.trim().strip_prefix("Build ID: "))
        .expect("readelf shows a build ID");
    line.trim().to_owned()
}

#[test]
fn build_id_matches_readelf() {
    for path in [
        common::c_program(),
        common::cpp_program(),
        common::rust_program(),
    ] {
        let elf = open(&path);
        assert_eq!(
            elf.build_id(),
            Some(readelf_build_id(&path).as_str()),
            "{}",
            path.display()
        );
    }
}

/// The bytes at a function's file offset are the bytes of the section that holds its address.
#[track_caller]
fn check_file_offset(path: &Path, function: &str) -> (u64, u64) {
    let elf = open(path);
    let sym = elf.functions().iter().find(|f| f.name == function).unwrap();
    let offset = elf
        .file_offset(sym.address)
        .expect("function is in a PT_LOAD segment");
    let data = std::fs::read(path).unwrap();
    let obj = object::File::parse(&*data).unwrap();
    let text = obj.section_by_name(".text").unwrap();
    let expect = text.data_range(sym.address, 16).unwrap().unwrap();
    assert_eq!(&data[offset as usize..offset as usize + 16], expect);
    (sym.address, offset)
}

#[test]
fn file_offsets() {
    let pie = common::c_program();
    assert_eq!(open(&pie).kind(), ElfKind::PieExecutable);
    assert!(open(&pie).is_pie());
    check_file_offset(&pie, "transfer");
    check_file_offset(&pie, "main");

    let fixed = common::c_program_no_pie();
    assert_eq!(open(&fixed).kind(), ElfKind::Executable);
    let (address, offset) = check_file_offset(&fixed, "transfer");
    assert_ne!(
        address, offset,
        "a non-PIE executable is linked at a high address"
    );

    // A PIE's first segment maps the ELF header at address 0; a fixed executable maps none.
    assert_eq!(open(&pie).file_offset(0), Some(0));
    assert_eq!(open(&fixed).file_offset(0), None);
    assert_eq!(open(&pie).file_offset(u64::MAX), None);
}

#[test]
fn shared_library_kind() {
    let maps = ProcessMaps::read(std::process::id()).unwrap();
    let libc = maps
        .objects()
        .into_iter()
        .find(|o| o.path.to_string_lossy().contains("libc.so"))
        .expect("the test process maps libc");
    let elf = open(&libc.open_path);
    assert_eq!(elf.kind(), ElfKind::SharedLibrary);
    // libc exports `malloc` from its dynamic symbol table.
    let found = resolve("malloc", std::slice::from_ref(&elf)).unwrap();
    assert_eq!(found[0].symbol.demangled, "malloc");
    assert!(!elf.is_ifunc(found[0].symbol.address));
    // glibc picks `memcpy` per CPU: its symbol is the resolver.
    let memcpy = resolve("memcpy", std::slice::from_ref(&elf)).unwrap();
    assert!(elf.is_ifunc(memcpy[0].symbol.address));
    // The pre-2.14 `memcpy` is a non-default version: it answers only to its versioned name.
    let old = resolve("memcpy@GLIBC_2.2.5", std::slice::from_ref(&elf)).unwrap();
    assert_eq!(old[0].symbol.demangled, "memcpy");
    assert_ne!(old[0].symbol.address, memcpy[0].symbol.address);
    assert!(!elf.is_ifunc(old[0].symbol.address));
    // `dlopen@GLIBC_2.2.5` and the default `dlopen@@GLIBC_2.34` share an address: the old
    // version listed first must not hide the plain name.
    let dlopen = resolve("dlopen", std::slice::from_ref(&elf)).unwrap();
    let old = resolve("dlopen@GLIBC_2.2.5", std::slice::from_ref(&elf)).unwrap();
    assert_eq!(dlopen[0].symbol.address, old[0].symbol.address);
}

#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn chronicle_symbols_test_target(x: u64) -> u64 {
    x.wrapping_mul(3)
}

#[test]
fn own_process_runtime_address() {
    assert_eq!(std::hint::black_box(chronicle_symbols_test_target)(2), 6);
    let maps = ProcessMaps::read(std::process::id()).unwrap();
    let objects = maps.objects();
    let main = &objects[0];
    assert!(main.is_main);
    assert!(!main.deleted);
    assert_eq!(
        std::fs::canonicalize(&main.path).unwrap(),
        std::fs::canonicalize(std::env::current_exe().unwrap()).unwrap()
    );
    assert!(
        main.open_path
            .starts_with(format!("/proc/{}/root", std::process::id()))
    );
    assert!(
        !objects
            .iter()
            .any(|o| o.path.to_string_lossy().starts_with('['))
    );

    let elfs: Vec<ElfFile> = objects.iter().map(|o| open(&o.open_path)).collect();
    let found = resolve("chronicle_symbols_test_target", &elfs).unwrap();
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].object, main.open_path);
    assert_eq!(found[0].build_id.as_deref(), elfs[0].build_id());

    let runtime = maps
        .runtime_address(&main.path, found[0].file_offset)
        .unwrap();
    assert_eq!(runtime, chronicle_symbols_test_target as *const () as u64);
    let mapping = maps
        .mappings()
        .iter()
        .find(|m| m.path.as_ref() == Some(&main.path) && m.start <= runtime && runtime < m.end)
        .unwrap();
    assert!(mapping.is_executable());
    assert_eq!(
        runtime,
        mapping.start + (found[0].file_offset - mapping.offset)
    );
}

#[test]
fn open_errors() {
    let err = ElfFile::open(Path::new("/nonexistent/binary")).unwrap_err();
    assert!(
        err.to_string()
            .starts_with("cannot open /nonexistent/binary: "),
        "{err}"
    );
    let err = ElfFile::open(&common::fixture("orders.c")).unwrap_err();
    assert!(err.to_string().contains("orders.c"), "{err}");
}

#[test]
fn needed_libraries_match_what_the_loader_maps() {
    let program = common::c_program();
    let elf = common::open(&program);
    assert_eq!(elf.dynamic_deps().needed, ["libc.so.6"]);
    // `ldd` asks the real loader; what it maps (libc, and the loader libc needs) is what we
    // must find. linux-vdso has no file and is left out.
    let ldd = common::run("ldd", &[program.to_str().unwrap()]);
    let expect: std::collections::BTreeSet<_> = ldd
        .lines()
        .filter_map(|l| {
            let l = l.trim();
            let path = l.split_once(" => ").map_or(l, |(_, rest)| rest);
            path.starts_with('/')
                .then(|| path.split_whitespace().next().unwrap())
        })
        .map(|p| std::fs::canonicalize(p).unwrap())
        .collect();
    let found = chronicle_symbols::libs::needed_libraries(&elf);
    assert_eq!(
        found
            .iter()
            .cloned()
            .collect::<std::collections::BTreeSet<_>>(),
        expect
    );
    assert_eq!(found.len(), expect.len(), "no library twice");
}

#[test]
fn a_stripped_file_takes_its_symbols_from_its_debug_file() {
    let dir = common::out_dir().join("stripped-symbols");
    std::fs::create_dir_all(&dir).unwrap();
    let full = common::c_program();
    let binary = dir.join("orders");
    let debug = dir.join("orders.debug");
    common::run(
        "objcopy",
        &[
            "--only-keep-debug",
            full.to_str().unwrap(),
            debug.to_str().unwrap(),
        ],
    );
    common::run(
        "objcopy",
        &[
            "--strip-all",
            &format!("--add-gnu-debuglink={}", debug.display()),
            full.to_str().unwrap(),
            binary.to_str().unwrap(),
        ],
    );
    let elf = open(&binary);
    assert!(!elf.has_symtab());
    assert_eq!(elf.symbols_from(), Some(debug.as_path()));
    let found = resolve("transfer", std::slice::from_ref(&elf)).unwrap();
    assert!(found[0].symbol.from_debug_file);
    let unstripped = resolve("transfer", &[open(&full)]).unwrap();
    assert_eq!(
        (found[0].symbol.address, found[0].file_offset),
        (unstripped[0].symbol.address, unstripped[0].file_offset)
    );
    // Without the debug file only exported functions remain, and the error says why.
    std::fs::remove_file(&debug).unwrap();
    let elf = open(&binary);
    assert_eq!(elf.symbols_from(), None);
    assert_eq!(
        resolve("transfer", std::slice::from_ref(&elf))
            .unwrap_err()
            .to_string(),
        format!(
            "no function `transfer` in {0}; {0} is stripped (it has no symbol table, and no \
             debug file with one was found), so only its exported functions can be traced: \
             trace an unstripped build, or put its debug file (objcopy --only-keep-debug) next \
             to it",
            binary.display()
        )
    );
}

#[test]
fn one_name_in_two_objects_lists_both_with_their_paths() {
    let first = common::c_program();
    let second = common::out_dir().join("orders-copy");
    std::fs::copy(&first, &second).unwrap();
    let objects = [open(&first), open(&second)];
    let address = resolve("transfer", &objects[..1]).unwrap()[0]
        .symbol
        .address;
    assert_eq!(
        resolve("transfer", &objects).unwrap_err().to_string(),
        format!(
            "`transfer` matches 2 functions: transfer [transfer at {address:#x} in {}], \
             transfer [transfer at {address:#x} in {}]; pass a longer path or the mangled \
             name, or FILE:NAME for the one in FILE",
            first.display(),
            second.display()
        )
    );
    // FILE:NAME picks one, by file name or by path.
    let picked = resolve("orders-copy:transfer", &objects).unwrap();
    assert_eq!(picked[0].object, second);
    let picked = resolve(&format!("{}:transfer", first.display()), &objects).unwrap();
    assert_eq!(picked[0].object, first);
    // `::` stays part of a name.
    let cpp = [open(&common::cpp_program())];
    check_resolves(&cpp, "shop::process(int)", "shop::process(int)");
    assert!(matches!(
        resolve("nowhere.so:transfer", &objects),
        Err(ResolveError::NotFound { .. })
    ));
}
