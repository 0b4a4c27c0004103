//! uap-core's own test corpus (tests/test_ua.yaml, test_os.yaml, test_device.yaml) through
//! the parser the edge uses, with the data `deploy/local/install.sh` installs: browser,
//! OS and device as uap-core says, how many real devices are taken for bots, and how many
//! of uap-core's `Spider` devices are recognised as bots. The corpus comes with the
//! `ua-parser` crate that Cargo fetches for the build (its source holds uap-core), so no
//! copy of it lives in this repository.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use traffsure_core::user_agent::{coarse_browser, regexes_compiled, Parser};

#[derive(Deserialize)]
struct Corpus<T> {
    test_cases: Vec<T>,
}

#[derive(Deserialize)]
struct UaCase {
    user_agent_string: String,
    family: String,
}

#[derive(Deserialize)]
struct OsCase {
    user_agent_string: String,
    family: String,
}

#[derive(Deserialize)]
struct DeviceCase {
    user_agent_string: String,
    family: String,
    brand: Option<String>,
    model: Option<String>,
}

fn workspace_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// uap-core's tests directory inside the `ua-parser` crate's source, as Cargo fetched it.
fn corpus_dir() -> PathBuf {
    let output = std::process::Command::new(env!("CARGO"))
        .args(["metadata", "--format-version", "1", "--locked"])
        .current_dir(workspace_dir())
        .output()
        .unwrap_or_else(|e| panic!("cargo metadata: {e}"));
    assert!(output.status.success(), "cargo metadata failed");
    let metadata: serde_json::Value =
        serde_json::from_slice(&output.stdout).unwrap_or_else(|e| panic!("cargo metadata: {e}"));
    let manifest = metadata["packages"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|p| p["name"] == "ua-parser")
        .and_then(|p| p["manifest_path"].as_str())
        .unwrap_or_else(|| panic!("the ua-parser crate is not a dependency"));
    Path::new(manifest)
        .parent()
        .unwrap_or_else(|| panic!("{manifest} has no directory"))
        .join("uap-core/tests")
}

fn read<T: serde::de::DeserializeOwned>(path: &Path) -> Vec<T> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_yaml_ng::from_str::<Corpus<T>>(&text)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .test_cases
}

/// The installed data (`UA_DATA_DIR` names another directory with the same two files).
fn installed_parser() -> Parser {
    let dir = std::env::var_os("UA_DATA_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_dir().join(".local/user-agents"));
    let read = |name: &str| {
        std::fs::read_to_string(dir.join(name)).unwrap_or_else(|e| {
            panic!(
                "{} (run deploy/local/install.sh): {e}",
                dir.join(name).display()
            )
        })
    };
    Parser::new(&read("regexes.yaml"), &read("crawler-user-agents.json"))
        .unwrap_or_else(|e| panic!("installed user-agent data: {e}"))
}

fn percent(part: usize, whole: usize) -> f64 {
    100.0 * part as f64 / whole.max(1) as f64
}

#[test]
fn uap_core_corpus_meets_the_targets() {
    // The regexes are compiled when a user agent first needs them, not at load (the only
    // test of this file: nothing else compiles any meanwhile).
    let before_load = regexes_compiled();
    let parser = installed_parser();
    assert_eq!(regexes_compiled(), before_load, "loading compiled regexes");
    let chrome = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0.0.0 Safari/537.36";
    assert_eq!(parser.parse(chrome).browser_family, "Chrome");
    let for_chrome = regexes_compiled() - before_load;
    println!("regexes compiled for one Chrome agent: {for_chrome}");
    assert!(
        (1..100).contains(&for_chrome),
        "one Chrome agent compiled {for_chrome} regexes"
    );
    let dir = corpus_dir();

    let browsers: Vec<UaCase> = read(&dir.join("test_ua.yaml"));
    let (mut family_ok, mut named, mut named_ok) = (0, 0, 0);
    for case in &browsers {
        let parsed = parser.parse(&case.user_agent_string);
        family_ok += usize::from(parsed.browser_family == case.family);
        // The coarse family of a browser TraffSure names (a bot is not one of them).
        let coarse = coarse_browser(&case.family);
        if coarse != "other" {
            named += 1;
            named_ok += usize::from(parsed.browser == coarse);
        }
    }
    let browser_family = percent(family_ok, browsers.len());
    let browser_coarse = percent(named_ok, named);

    let systems: Vec<OsCase> = read(&dir.join("test_os.yaml"));
    let os_ok = systems
        .iter()
        .filter(|case| parser.parse(&case.user_agent_string).os_family == case.family)
        .count();
    let os_family = percent(os_ok, systems.len());

    let devices: Vec<DeviceCase> = read(&dir.join("test_device.yaml"));
    let (mut device_ok, mut spiders, mut spiders_caught) = (0, 0, 0);
    let (mut people, mut people_flagged, mut cubots, mut cubots_flagged) = (0, 0, 0, 0);
    let mut flagged_examples = Vec::new();
    for case in &devices {
        let parsed = parser.parse(&case.user_agent_string);
        device_ok += usize::from(
            parsed.device_family == case.family
                && parsed.device_brand == case.brand.clone().unwrap_or_default()
                && parsed.device_model == case.model.clone().unwrap_or_default(),
        );
        if case.family == "Spider" {
            spiders += 1;
            spiders_caught += usize::from(parsed.is_bot());
        } else if case.family != "Other" {
            // A named phone, tablet, desktop, TV or console.
            people += 1;
            if parsed.is_bot() {
                people_flagged += 1;
                if flagged_examples.len() < 10 {
                    flagged_examples.push(case.user_agent_string.clone());
                }
            }
            if case.brand.as_deref() == Some("Cubot") {
                cubots += 1;
                cubots_flagged += usize::from(parsed.is_bot());
            }
        }
    }
    let device = percent(device_ok, devices.len());
    let people_bots = percent(people_flagged, people);
    let spiders_found = percent(spiders_caught, spiders);

    println!("uap-core corpus ({})", dir.display());
    println!(
        "  browser family      {browser_family:7.3} % of {} (target >= 99)",
        browsers.len()
    );
    println!("  coarse browser      {browser_coarse:7.3} % of {named} the tracker names");
    println!(
        "  os family           {os_family:7.3} % of {} (target >= 98)",
        systems.len()
    );
    println!(
        "  device/brand/model  {device:7.3} % of {} (target >= 98)",
        devices.len()
    );
    println!(
        "  devices as bots     {people_bots:7.3} % ({people_flagged} of {people}; target <= 0.05)"
    );
    println!("  cubot phones bots   {cubots_flagged} of {cubots}");
    println!(
        "  spiders as bots     {spiders_found:7.3} % ({spiders_caught} of {spiders}; target >= 95)"
    );
    for ua in &flagged_examples {
        println!("    flagged: {ua}");
    }

    assert!(
        browser_family >= 99.0,
        "browser family {browser_family:.3} %"
    );
    assert!(os_family >= 98.0, "os family {os_family:.3} %");
    assert!(device >= 98.0, "device {device:.3} %");
    assert!(people_bots <= 0.05, "devices as bots {people_bots:.3} %");
    assert!(cubots > 0 && cubots_flagged == 0, "cubot phones as bots");
    assert!(
        spiders_found >= 95.0,
        "spiders as bots {spiders_found:.3} %"
    );
}
