//! `#[capture]`: records a Rust function's arguments, return value, errors, panics and
//! timing into Chronicle's pipeline, from the inside. The function's signature and
//! behaviour do not change.
//!
//! ```text
//! #[chronicle::capture]
//! fn process_order(order: &Order) -> Result<Receipt, OrderError> { ... }
//!
//! #[chronicle::capture(name = "orders::refund", skip(db))]
//! async fn refund(db: &Db, id: u64) -> u64 { ... }
//! ```
//!
//! (Plain text: a proc-macro crate cannot run doctests of its own macro;
//! `chronicle/tests/capture_macro.rs` runs the real thing.)
//!
//! Options: `name = "..."` (default `module_path!()::fn_name`), `skip(arg, ...)` for
//! arguments that are not `serde::Serialize` (recorded as unavailable), `self` to record the
//! receiver (it must be `Serialize`). Arguments and the return value must be `Serialize`.
//! When capture is off the cost is one relaxed atomic load.

use proc_macro::TokenStream;
use quote::{format_ident, quote};
use syn::parse::{Parse, ParseStream};
use syn::punctuated::Punctuated;
use syn::{FnArg, Ident, ItemFn, LitStr, Pat, ReturnType, Token, Type, parse_macro_input};

#[derive(Default)]
struct Options {
    name: Option<LitStr>,
    skip: Vec<Ident>,
    record_self: bool,
}

impl Parse for Options {
    fn parse(input: ParseStream) -> syn::Result<Self> {
        let mut options = Options::default();
        while !input.is_empty() {
            if input.peek(Token![self]) {
                input.parse::<Token![self]>()?;
                options.record_self = true;
            } else {
                let key: Ident = input.parse()?;
                match key.to_string().as_str() {
                    "name" => {
                        input.parse::<Token![=]>()?;
                        options.name = Some(input.parse()?);
                    }
                    "skip" => {
                        let content;
                        syn::parenthesized!(content in input);
                        let names: Punctuated<Ident, Token![,]> =
                            content.parse_terminated(Ident::parse, Token![,])?;
                        options.skip.extend(names);
                    }
                    other => {
                        return Err(syn::Error::new(
                            key.span(),
                            format!(
                                "unknown #[capture] option `{other}`; use name = \"...\", skip(...) or self"
                            ),
                        ));
                    }
                }
            }
            if !input.is_empty() {
                input.parse::<Token![,]>()?;
            }
        }
        Ok(options)
    }
}

/// Records calls of the function it is put on; see the crate docs.
#[proc_macro_attribute]
pub fn capture(attr: TokenStream, item: TokenStream) -> TokenStream {
    let options = parse_macro_input!(attr as Options);
    let function = parse_macro_input!(item as ItemFn);
    match expand(options, function) {
        Ok(tokens) => tokens.into(),
        Err(e) => e.to_compile_error().into(),
    }
}

fn expand(options: Options, function: ItemFn) -> syn::Result<proc_macro2::TokenStream> {
    let ItemFn {
        attrs,
        vis,
        sig,
        block,
    } = function;
    let fn_name = sig.ident.to_string();
    let name = match &options.name {
        Some(lit) => quote!(#lit),
        None => quote!(::core::concat!(::core::module_path!(), "::", #fn_name)),
    };

    let mut recorded = Vec::new();
    let mut skipped = Vec::new();
    for input in &sig.inputs {
        match input {
            FnArg::Receiver(_) => {
                if options.record_self {
                    recorded.push(quote!(("self", ::chronicle::capture::to_value(&self))));
                }
            }
            FnArg::Typed(typed) => {
                let Pat::Ident(pat) = &*typed.pat else {
                    return Err(syn::Error::new_spanned(
                        &typed.pat,
                        "#[capture] needs plain argument names (no patterns)",
                    ));
                };
                let ident = &pat.ident;
                let label = ident.to_string();
                if options.skip.iter().any(|s| s == ident) {
                    skipped.push(label);
                } else {
                    recorded.push(quote!((#label, ::chronicle::capture::to_value(&#ident))));
                }
            }
        }
    }
    for s in &options.skip {
        let known = sig.inputs.iter().any(
            |i| matches!(i, FnArg::Typed(t) if matches!(&*t.pat, Pat::Ident(p) if p.ident == *s)),
        );
        if !known {
            return Err(syn::Error::new(
                s.span(),
                format!("skip({s}): no argument named `{s}`"),
            ));
        }
    }
    let is_result = match &sig.output {
        ReturnType::Type(_, ty) => is_result_type(ty),
        ReturnType::Default => false,
    };
    let returns = match &sig.output {
        ReturnType::Type(_, ty) => quote!(#ty),
        ReturnType::Default => quote!(()),
    };
    let call = format_ident!("__chronicle_call");
    // An async call may move between threads: it takes no thread's dependencies.
    let begin_fn = if sig.asyncness.is_some() {
        format_ident!("begin_async")
    } else {
        format_ident!("begin")
    };
    let begin = quote! {
        let mut #call = ::chronicle::capture::Call::#begin_fn(
            #name,
            || ::std::vec![#(#recorded),*],
            &[#(#skipped),*],
        );
    };
    let body = if sig.asyncness.is_some() {
        quote! {
            #begin
            let __chronicle_result: #returns = async move #block.await;
            if let ::core::option::Option::Some(call) = #call.as_mut() {
                call.finish(&__chronicle_result, #is_result);
            }
            __chronicle_result
        }
    } else {
        quote! {
            #begin
            #[allow(clippy::redundant_closure_call)]
            let __chronicle_result: #returns = (|| -> #returns #block)();
            if let ::core::option::Option::Some(call) = #call.as_mut() {
                call.finish(&__chronicle_result, #is_result);
            }
            __chronicle_result
        }
    };
    Ok(quote! {
        #(#attrs)*
        #vis #sig {
            #body
        }
    })
}

/// `Result<..>`, `std::result::Result<..>`, `io::Result<..>`, `anyhow::Result<..>`, ...
fn is_result_type(ty: &Type) -> bool {
    match ty {
        Type::Path(p) => p.path.segments.last().is_some_and(|s| s.ident == "Result"),
        _ => false,
    }
}
