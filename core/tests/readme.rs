//! The README's Rust snippet is `examples/rust/readme.rs`, which `cargo
//! test` compiles: this checks the README shows that program's lines.

#[test]
fn the_readme_rust_snippet_is_the_compiled_example() {
    let readme = include_str!("../../README.md");
    let example = include_str!("../../examples/rust/readme.rs");
    let start = readme.find("```rust\n").expect("the README has a Rust snippet") + "```rust\n".len();
    let snippet: Vec<&str> = readme[start..].split("\n```").next().unwrap().lines().collect();

    let use_line = example.lines().find(|l| l.starts_with("use pillarbox::")).unwrap();
    let body = example.split("// README begin\n").nth(1).unwrap().split("    // README end").next().unwrap();
    let mut expected = vec![use_line, ""];
    expected.extend(body.lines().map(|l| l.strip_prefix("    ").unwrap_or(l)));
    assert_eq!(snippet, expected, "the README's snippet and examples/rust/readme.rs differ");
}
