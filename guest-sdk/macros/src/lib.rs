//! `#[filter]`: turns one function into an event-collector filter component.
//!
//! ```ignore
//! use event_collector_guest::prelude::*;
//!
//! #[filter]
//! fn process(fields: &EventFields, _event: &EventJson) -> Result<Verdict, String> {
//!     Ok(Verdict::keep_if(fields.event_type == "Warning"))
//! }
//! ```
//!
//! The function keeps its name and body; the attribute only adds
//! `event_collector_guest::export_filter_fn!(name);` after it. Written without
//! `syn`/`quote` so it costs nothing to compile.

use proc_macro::{Delimiter, Group, Ident, Punct, Spacing, Span, TokenStream, TokenTree};

/// Exports a free function `fn NAME(&EventFields, &EventJson) -> Result<Verdict, String>`
/// as the module's `process` (the `EventJson` fetches the event's JSON from
/// the host only when called). `init` accepts any config. For a filter that reads
/// its config or keeps state, implement `event_collector_guest::Filter` instead.
#[proc_macro_attribute]
pub fn filter(attr: TokenStream, item: TokenStream) -> TokenStream {
    if !attr.is_empty() {
        return compile_error("#[filter] takes no arguments; implement the `Filter` trait for config and state");
    }
    let name = match fn_name(&item) {
        Some(n) => n,
        None => {
            return compile_error(
                "#[filter] goes on a function: fn process(fields: &EventFields, event: &EventJson) -> Result<Verdict, String>",
            );
        }
    };
    let mut out = item;
    // ::event_collector_guest::export_filter_fn!(name);
    let path: Vec<TokenTree> = vec![
        Punct::new(':', Spacing::Joint).into(),
        Punct::new(':', Spacing::Alone).into(),
        Ident::new("event_collector_guest", Span::call_site()).into(),
        Punct::new(':', Spacing::Joint).into(),
        Punct::new(':', Spacing::Alone).into(),
        Ident::new("export_filter_fn", Span::call_site()).into(),
        Punct::new('!', Spacing::Alone).into(),
        Group::new(Delimiter::Parenthesis, TokenStream::from(TokenTree::Ident(name))).into(),
        Punct::new(';', Spacing::Alone).into(),
    ];
    out.extend(path);
    out
}

/// The identifier after the `fn` keyword at the top level of the item.
fn fn_name(item: &TokenStream) -> Option<Ident> {
    let mut iter = item.clone().into_iter();
    while let Some(tt) = iter.next() {
        if let TokenTree::Ident(i) = &tt
            && i.to_string() == "fn"
        {
            return match iter.next() {
                Some(TokenTree::Ident(name)) => Some(name),
                _ => None,
            };
        }
    }
    None
}

fn compile_error(msg: &str) -> TokenStream {
    format!("::core::compile_error!({msg:?});").parse().unwrap()
}
