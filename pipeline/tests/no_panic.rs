//! Property test: thousands of generated and mutated documents never make the parser panic, every
//! rejection is a well-formed `ValidationError`, and every accepted pipeline keeps its invariants
//! (needs before dependants, getters total). A hand-rolled, fixed-seed PRNG keeps runs
//! reproducible; the test prints how many cases it ran and how long they took.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::Instant;

use rap_pipeline::{Pipeline, glob, load_pipeline};

/// SplitMix64: tiny, fast, good enough to drive a generator.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    fn chance(&mut self, percent: usize) -> bool {
        self.below(100) < percent
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len())]
    }
}

const VERSIONS: &[&str] = &[
    "5", "'5'", "4", "3", "2", "1", "0", "-1", "4.5", "6", "'x'", "[5]", "null", ".nan", ".inf",
    "'5.0'", "true", "{a: 1}", "1e3", "0x5",
];
const IMAGES: &[&str] = &[
    "python",
    "r",
    "ehrql",
    "databuilder",
    "cohortextractor",
    "sqlrunner",
    "stata-mp",
    "cox-ipw",
    "",
    "py thon",
];
const TAGS: &[&str] = &[
    "v1", "v2", "latest", "dev", "v1.2-pre", "", "x", "v", "3.11", "v0.0.30",
];
const COMMANDS: &[&str] = &[
    "generate-dataset d.py --output output/a.csv",
    "generate-dataset d.py --output output/tables:arrow",
    "generate_dataset d.py --output=output/a.csv",
    "generate-measures m.py",
    "generate_cohort",
    "generate_cohort --output-dir=output",
    "generate_codelist_report",
    "a.py",
    "'unbalanced",
    "\"quoted arg\"",
    "trailing \\\\",
    "",
];
const PATHS: &[&str] = &[
    "output/a.csv",
    "output/*.csv",
    "output/tables/*.arrow",
    "output/a.csv",
    "a.feather",
    "../a.csv",
    "/abs.csv",
    "c:/x.csv",
    "metadata/x.csv",
    "out//a.csv",
    "a\\\\b.csv",
    "a?.csv",
    "a[1].csv",
    "**/a.csv",
    "noext",
    ".csv",
    "a.*",
    "counts.txt",
    "",
];
const LEVELS: &[&str] = &[
    "highly_sensitive",
    "moderately_sensitive",
    "minimally_sensitive",
    "other_level",
];
const SCALARS: &[&str] = &[
    "1",
    "null",
    "~",
    "true",
    "'s'",
    "\"d\"",
    "[]",
    "{}",
    "[a, 1]",
    "{x: y}",
    "1.5",
    "'it''s'",
    "é",
    "&anchor v",
    "*anchor",
    "!!str 5",
    "!custom x",
    "|\n  block",
];
const MUTATION_CHARS: &[char] = &[
    ':', '{', '}', '[', ']', ',', '&', '*', '!', '|', '>', '\'', '"', '#', '%', '@', '`', '-', '?',
    '\t', '\n', ' ', '\\', 'é', '\u{0}', '\u{feff}', '<', '=',
];

fn action_names(rng: &mut Rng, n: usize) -> Vec<String> {
    (0..n)
        .map(|i| match rng.below(12) {
            0 => "run_all".to_owned(),
            1 => "'my action!'".to_owned(),
            2 => "1".to_owned(),
            _ => format!("action_{i}"),
        })
        .collect()
}

/// A document built only from valid parts (needs point backwards, so no cycles): most are
/// accepted, which exercises the accepted pipelines' invariants on varied graphs.
fn generate_clean(rng: &mut Rng) -> String {
    let mut doc = format!(
        "version: {}\nactions:\n",
        rng.pick(&["5", "'5'", "4", "5.0"])
    );
    let n_actions = 1 + rng.below(12);
    for i in 0..n_actions {
        doc.push_str(&format!("  action_{i}:\n"));
        let image = rng.pick(&[
            "python:v2",
            "r:v1",
            "stata-mp:v2",
            "cox-ipw:v0.0.30",
            "sqlrunner:v1",
        ]);
        doc.push_str(&format!("    run: {image} script_{i}.py --flag 'a b'\n"));
        if i > 0 && rng.chance(70) {
            let needs: Vec<String> = (0..1 + rng.below(3))
                .map(|_| format!("action_{}", rng.below(i)))
                .collect();
            doc.push_str(&format!("    needs: [{}]\n", needs.join(", ")));
        }
        doc.push_str("    outputs:\n");
        let level = rng.pick(&[
            "highly_sensitive",
            "moderately_sensitive",
            "minimally_sensitive",
        ]);
        let ext = rng.pick(&[".csv", ".png", ".txt"]);
        doc.push_str(&format!("      {level}:\n        o: output/a_{i}/*{ext}\n"));
        if rng.chance(30) {
            doc.push_str(&format!(
                "    config: {{n: {i}, s: \"it's\", l: [1, 2.5, null]}}\n"
            ));
        }
    }
    doc
}

fn generate(rng: &mut Rng) -> String {
    if rng.chance(30) {
        return generate_clean(rng);
    }
    let mut doc = String::new();
    if !rng.chance(5) {
        doc.push_str(&format!("version: {}\n", rng.pick(VERSIONS)));
    }
    if rng.chance(10) {
        doc.push_str(&format!(
            "expectations: {{population_size: {}}}\n",
            rng.pick(SCALARS)
        ));
    }
    if rng.chance(5) {
        doc.push_str(&format!("unexpected: {}\n", rng.pick(SCALARS)));
    }
    if rng.chance(5) {
        doc.push_str(&format!("actions: {}\n", rng.pick(SCALARS)));
        return doc;
    }
    doc.push_str("actions:\n");
    let n_actions = 1 + rng.below(8);
    let names = action_names(rng, n_actions);
    for name in &names {
        doc.push_str(&format!("  {name}:\n"));
        if rng.chance(3) {
            doc.push_str(&format!("    {}\n", rng.pick(SCALARS)));
            continue;
        }
        if !rng.chance(5) {
            let run = format!(
                "{}:{} {}",
                rng.pick(IMAGES),
                rng.pick(TAGS),
                rng.pick(COMMANDS)
            );
            if rng.chance(70) {
                doc.push_str(&format!("    run: {run}\n"));
            } else {
                doc.push_str(&format!("    run: {}\n", rng.pick(SCALARS)));
            }
        }
        if rng.chance(60) {
            let needs: Vec<&str> = (0..rng.below(4))
                .map(|_| {
                    if rng.chance(85) {
                        names[rng.below(names.len())].as_str()
                    } else {
                        rng.pick(&["nope", "a b", "1", "[x]", "null"])
                    }
                })
                .collect();
            doc.push_str(&format!("    needs: [{}]\n", needs.join(", ")));
        }
        if !rng.chance(5) {
            doc.push_str("    outputs:\n");
            for _ in 0..rng.below(3) + usize::from(rng.chance(80)) {
                let level = rng.pick(LEVELS);
                if rng.chance(10) {
                    doc.push_str(&format!("      {level}: {}\n", rng.pick(SCALARS)));
                    continue;
                }
                doc.push_str(&format!("      {level}:\n"));
                for k in 0..rng.below(3) {
                    let path = rng.pick(PATHS);
                    doc.push_str(&format!("        o{k}: '{path}'\n"));
                }
            }
        }
        if rng.chance(20) {
            doc.push_str(&format!(
                "    config: {{a: {}, b: [{}, {}]}}\n",
                rng.pick(SCALARS).replace('\n', " "),
                rng.pick(&["1", "'x'", "null", "2.5"]),
                rng.pick(&["{c: d}", "[]", "true"])
            ));
        }
        if rng.chance(5) {
            doc.push_str(&format!("    dummy_data_file: {}\n", rng.pick(SCALARS)));
        }
        if rng.chance(5) {
            doc.push_str("    surprise: 1\n");
        }
    }
    doc
}

fn mutate(rng: &mut Rng, doc: &str) -> String {
    let mut chars: Vec<char> = doc.chars().collect();
    for _ in 0..1 + rng.below(4) {
        let len = chars.len();
        match rng.below(7) {
            0 if len > 0 => {
                let at = rng.below(len);
                let n = 1 + rng.below(8).min(len - at - 1 + 1).min(len - at);
                chars.drain(at..at + n.min(len - at));
            }
            1 => {
                let at = rng.below(len + 1);
                let c = MUTATION_CHARS[rng.below(MUTATION_CHARS.len())];
                chars.insert(at, c);
            }
            2 if len > 0 => {
                let at = rng.below(len);
                chars[at] = MUTATION_CHARS[rng.below(MUTATION_CHARS.len())];
            }
            3 => {
                let text: String = chars.iter().collect();
                let mut lines: Vec<&str> = text.lines().collect();
                if lines.len() > 1 {
                    let (a, b) = (rng.below(lines.len()), rng.below(lines.len()));
                    lines.swap(a, b);
                }
                chars = lines.join("\n").chars().collect();
            }
            4 => {
                let text: String = chars.iter().collect();
                let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
                if !lines.is_empty() {
                    let at = rng.below(lines.len());
                    let line = lines[at].clone();
                    if rng.chance(50) {
                        lines.insert(at, line);
                    } else {
                        lines[at] = format!("{}{line}", " ".repeat(rng.below(5)));
                    }
                }
                chars = lines.join("\n").chars().collect();
            }
            5 => {
                let keep = rng.below(len + 1);
                chars.truncate(keep);
            }
            _ => {
                let at = rng.below(len + 1);
                let piece = rng.pick(SCALARS);
                for (i, c) in piece.chars().enumerate() {
                    chars.insert(at + i, c);
                }
            }
        }
    }
    chars.into_iter().collect()
}

fn random_text(rng: &mut Rng) -> String {
    let n = rng.below(80);
    (0..n)
        .map(|_| {
            if rng.chance(70) {
                MUTATION_CHARS[rng.below(MUTATION_CHARS.len())]
            } else {
                char::from(b'a' + rng.below(26) as u8)
            }
        })
        .collect()
}

/// Loads one document; panics (failing the test) with the input if anything misbehaves.
fn exercise(doc: &str) -> bool {
    let outcome = catch_unwind(AssertUnwindSafe(|| match load_pipeline(doc) {
        Ok(pipeline) => {
            check_invariants(&pipeline);
            true
        }
        Err(error) => {
            assert!(
                error
                    .message()
                    .starts_with("Invalid project: project.yaml\n"),
                "{}",
                error.message()
            );
            assert!(!error.reason().is_empty());
            false
        }
    }));
    match outcome {
        Ok(accepted) => accepted,
        Err(_) => panic!("panicked on input:\n{doc:?}"),
    }
}

fn check_invariants(pipeline: &Pipeline) {
    let order = pipeline.topological_order();
    let position = |name: &str| order.iter().position(|a| a.name() == name);
    for (i, action) in order.iter().enumerate() {
        for need in action.needs() {
            let at = position(need).expect("every need is in the order");
            assert!(at < i, "{need} after {}", action.name());
        }
        let _ = action.run_command();
        let _ = action.run_argv();
        let _ = action.is_database_action();
        for output in action.output_spec() {
            assert!(glob::check_output_pattern(&output.pattern, output.privacy).is_ok());
            assert!(glob::check_pattern(&output.pattern).is_ok());
            let _ = glob::matches(&output.pattern, "output/a.csv");
        }
    }
    assert_eq!(pipeline.action_names().len(), pipeline.actions().count());
    let _ = pipeline.action_images();
    let _ = pipeline.version().to_string();
}

#[test]
fn the_parser_never_panics_on_generated_and_mutated_documents() {
    let mut rng = Rng(0x5EED_0F0A_u64);
    let valid_example = include_str!("data/valid_example.yaml");
    let started = Instant::now();
    let (mut n_cases, mut n_accepted) = (0usize, 0usize);
    for round in 0..10_000 {
        let generated = generate(&mut rng);
        let mutated = mutate(&mut rng, &generated);
        let mutated_example = mutate(&mut rng, valid_example);
        let noise = random_text(&mut rng);
        for doc in [&generated, &mutated, &mutated_example, &noise] {
            n_cases += 1;
            n_accepted += usize::from(exercise(doc));
        }
        if round == 0 {
            // The example itself must still parse: a sanity check on the harness.
            assert!(exercise(valid_example));
        }
    }
    let elapsed = started.elapsed();
    println!(
        "no_panic: {n_cases} documents ({n_accepted} accepted) in {:.2?} ({:.1} µs each)",
        elapsed,
        elapsed.as_secs_f64() * 1e6 / n_cases as f64
    );
    // The generator must reach both outcomes, or it tests little.
    assert!(n_accepted > 100, "only {n_accepted} accepted");
    assert!(n_cases - n_accepted > 1000);
}
