//! Security (issue 13): the files certctl writes cannot be turned against root.
//!
//! certctl runs as root and writes into folders other accounts own (`issue --out`, the
//! certificates `regenerate --deploy` replaces, the deny list). The owner of such a folder,
//! here `nobody`, plants symlinks to a root-owned file under every name certctl could use
//! there: the temporary names `.<name>.certctl-tmp-<pid>` for the next pids, the final names
//! and the `.bak` names. Whatever certctl writes, the root-owned file keeps its content, mode
//! and owner, and the outputs are regular files with their usual modes.
//!
//! Published CRLs are for web servers: 0644, in folders certctl creates 0755, whatever the
//! umask (certctl itself runs with umask 077).
//!
//! The tests that need another user skip (saying so) when not run as root.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use certctl_e2e::hostile::{can_run_as_nobody, chmod, chown_tree, setpriv_nobody, NOBODY};
use certctl_e2e::*;

/// How many pids after the current one get a planted temporary name.
const PIDS: u32 = 1000;

/// A root-owned file outside the attacked folders, the target of every planted symlink.
struct Bait {
    path: PathBuf,
    content: Vec<u8>,
}

impl Bait {
    fn new(env: &TestEnv) -> Bait {
        let path = env.file("root-only/secret.txt");
        let content = b"root's secret: only root reads or writes this\n".to_vec();
        std::fs::write(&path, &content).expect("write the bait");
        chmod(&path, 0o600);
        Bait { path, content }
    }

    /// The bait still has its content, mode 0600 and owner root:root.
    #[track_caller]
    fn assert_untouched(&self, after: &str) {
        let meta = std::fs::symlink_metadata(&self.path).expect("the bait is still there");
        assert!(meta.is_file(), "{after}: the bait is no longer a file");
        assert_eq!(
            String::from_utf8_lossy(&std::fs::read(&self.path).expect("read the bait")),
            String::from_utf8_lossy(&self.content),
            "{after}: certctl wrote into the root-owned file through a planted symlink"
        );
        assert_eq!(
            meta.mode() & 0o7777,
            0o600,
            "{after}: the bait's mode changed"
        );
        assert_eq!(
            (meta.uid(), meta.gid()),
            (0, 0),
            "{after}: the bait was given away"
        );
    }
}

/// Lets `nobody` reach the folders under the test's root (the temp folder is 0700).
fn open_up(env: &TestEnv) {
    chmod(env.root(), 0o755);
}

/// `ROOT/rel`, created, owned by `nobody`, 0755.
fn nobody_dir(env: &TestEnv, rel: &str) -> PathBuf {
    let dir = env.mkdir(rel);
    chown_tree(&dir, NOBODY, NOBODY);
    chmod(&dir, 0o755);
    dir
}

/// The last pid handed out in this pid namespace.
fn last_pid() -> u32 {
    std::fs::read_to_string("/proc/sys/kernel/ns_last_pid")
        .expect("read /proc/sys/kernel/ns_last_pid")
        .trim()
        .parse()
        .expect("a pid")
}

/// As `nobody`, in one process: symlinks to `target` named `.<name>.certctl-tmp-<pid>` for
/// each of `tmp_names` and the next [`PIDS`] pids, and named `<name>` for each of
/// `final_names`.
fn spray(dir: &Path, target: &Path, tmp_names: &[&str], final_names: &[&str]) {
    let pid_max: u32 = std::fs::read_to_string("/proc/sys/kernel/pid_max")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(32768);
    let first = last_pid() + 1;
    let pids: Vec<String> = (0..PIDS)
        .map(|i| {
            let p = first + i;
            // Pids wrap around to 300 after pid_max.
            if p >= pid_max {
                p - pid_max + 300
            } else {
                p
            }
        })
        .map(|p| p.to_string())
        .collect();
    let script = r#"
        my ($dir, $target, $pids, $tmp, $final) = @ARGV;
        my $n = 0;
        for my $name (split /,/, $tmp) {
            for my $pid (split /,/, $pids) {
                symlink($target, "$dir/.$name.certctl-tmp-$pid") or die "symlink: $!";
                $n++;
            }
        }
        for my $name (split /,/, $final) {
            symlink($target, "$dir/$name") or die "symlink $name: $!";
            $n++;
        }
        print "$n\n";
    "#;
    let out = Command::new("setpriv")
        .args(setpriv_nobody())
        .args(["perl", "-e", script])
        .arg(dir)
        .arg(target)
        .arg(pids.join(","))
        .arg(tmp_names.join(","))
        .arg(final_names.join(","))
        .output()
        .expect("run perl as nobody (perl is part of every Debian/Ubuntu base system)");
    assert!(
        out.status.success(),
        "planting symlinks as nobody failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let planted: usize = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
    assert_eq!(planted, tmp_names.len() * PIDS as usize + final_names.len());
}

/// Mode bits of a path that must be a regular file (not a symlink).
#[track_caller]
fn regular_mode(path: &Path) -> u32 {
    let meta =
        std::fs::symlink_metadata(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert!(
        meta.is_file(),
        "{} is not a regular file ({:?})",
        path.display(),
        meta.file_type()
    );
    meta.mode() & 0o7777
}

#[track_caller]
fn owner(path: &Path) -> u32 {
    std::fs::symlink_metadata(path).unwrap().uid()
}

fn dir_mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o7777
}

/// `certctl ARGS` as root, with `USER=alice`.
fn run(env: &TestEnv, args: &[&str]) -> RunResult {
    env.cmd().args(args).env("USER", "alice").run()
}

/// The fingerprint line `issue` prints.
fn issued_fingerprint(r: &RunResult) -> String {
    let line = r
        .stdout
        .lines()
        .find(|l| l.starts_with("fingerprint (SHA-256): "))
        .unwrap_or_else(|| panic!("no fingerprint line{r}"));
    line["fingerprint (SHA-256): ".len()..].trim().to_string()
}

fn file_fingerprint(path: &Path) -> String {
    let bytes = std::fs::read(path).unwrap();
    let x = openssl::x509::X509::from_pem(&bytes)
        .or_else(|_| openssl::x509::X509::from_der(&bytes))
        .unwrap_or_else(|e| panic!("{} holds no certificate: {e}", path.display()));
    sha256_hex(&x.to_der().unwrap())
}

#[test]
fn issue_out_into_a_folder_full_of_planted_symlinks_writes_only_its_own_files() {
    if !can_run_as_nobody() {
        return;
    }
    let env = TestEnv::new();
    open_up(&env);
    let bait = Bait::new(&env);
    run(&env, &["ca", "init", "--name", "ops"]).success();
    let out = nobody_dir(&env, "out");
    let cn = "www.example.com";
    let names = [
        format!("{cn}.pem"),
        format!("{cn}.key"),
        format!("{cn}.chain.pem"),
    ];
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    spray(&out, &bait.path, &names, &names);

    // --yes: the final names exist (as symlinks), and replacing them is what was asked.
    let r = run(
        &env,
        &[
            "issue",
            "--ca",
            "ops",
            "--cn",
            cn,
            "--role",
            "gateway",
            "--out",
            s(&out),
            "--yes",
        ],
    );
    bait.assert_untouched("issue --out");
    r.success();
    let fp = issued_fingerprint(&r);
    let cert = out.join(format!("{cn}.pem"));
    let key = out.join(format!("{cn}.key"));
    let chain = out.join(format!("{cn}.chain.pem"));
    assert_eq!(regular_mode(&cert), 0o644);
    assert_eq!(regular_mode(&chain), 0o644);
    assert_eq!(regular_mode(&key), 0o600);
    for p in [&cert, &key, &chain] {
        assert_eq!(
            owner(p),
            0,
            "{}: a symlink is never used for the owner",
            p.display()
        );
    }
    assert_eq!(file_fingerprint(&cert), fp);
    assert_eq!(file_fingerprint(&chain), fp);
    let key_pem = std::fs::read(&key).unwrap();
    openssl::pkey::PKey::private_key_from_pem(&key_pem).expect("the key file holds a key");
}

#[test]
fn regenerate_deploy_into_a_folder_full_of_planted_symlinks_writes_only_its_own_files() {
    if !can_run_as_nobody() {
        return;
    }
    let env = TestEnv::new();
    open_up(&env);
    let bait = Bait::new(&env);
    run(&env, &["ca", "init", "--name", "ops"]).success();
    let issued = env.mkdir("issued");
    let cn = "gw.example.com";
    let r = run(
        &env,
        &[
            "issue",
            "--ca",
            "ops",
            "--cn",
            cn,
            "--role",
            "gateway",
            "--out",
            s(&issued),
        ],
    );
    r.success();
    let old_fp = issued_fingerprint(&r);

    // The service's folder and files belong to nobody.
    let dep = nobody_dir(&env, "deploy");
    let pem = dep.join("server.pem");
    let key = dep.join("server.key");
    std::fs::copy(issued.join(format!("{cn}.pem")), &pem).unwrap();
    std::fs::copy(issued.join(format!("{cn}.key")), &key).unwrap();
    chmod(&pem, 0o644);
    chmod(&key, 0o600);
    chown_tree(&dep, NOBODY, NOBODY);
    run(&env, &["scan", s(&dep), "--role", "gateway"]).success();

    spray(
        &dep,
        &bait.path,
        &[
            "server.pem",
            "server.key",
            "server.pem.bak",
            "server.key.bak",
        ],
        &["server.pem.bak", "server.key.bak"],
    );
    let r = run(
        &env,
        &["regenerate", &old_fp, "--deploy", "--yes", "--json"],
    );
    bait.assert_untouched("regenerate --deploy");
    r.success();
    let new_fp = r.json()["new_fingerprint"].as_str().unwrap().to_string();
    assert_ne!(new_fp, old_fp);

    assert_eq!(file_fingerprint(&pem), new_fp);
    assert_eq!(regular_mode(&pem), 0o644);
    assert_eq!(regular_mode(&key), 0o600);
    // The service keeps owning its files.
    assert_eq!(owner(&pem), NOBODY);
    assert_eq!(owner(&key), NOBODY);
    let bak = dep.join("server.pem.bak");
    let key_bak = dep.join("server.key.bak");
    regular_mode(&bak);
    assert_eq!(file_fingerprint(&bak), old_fp);
    assert_eq!(regular_mode(&key_bak), 0o600);
}

#[test]
fn agents_block_writes_the_deny_list_over_planted_symlinks_not_through_them() {
    if !can_run_as_nobody() {
        return;
    }
    let env = TestEnv::new();
    open_up(&env);
    let bait = Bait::new(&env);
    let agent = CertFactory::new().leaf(CertSpec::leaf("agent-5").expires_in_days(200));
    files::pem(&env.file("agents/agent-5.pem"), &[&agent]);
    run(
        &env,
        &["scan", s(&env.root().join("agents")), "--role", "agent"],
    )
    .success();

    let gw = nobody_dir(&env, "gateway");
    let deny = gw.join("deny.txt");
    spray(&gw, &bait.path, &["deny.txt"], &["deny.txt"]);
    let r = run(
        &env,
        &["agents", "block", "agent-5", "--deny-list", s(&deny)],
    );
    bait.assert_untouched("agents block");
    r.success();
    assert_eq!(regular_mode(&deny), 0o644);
    assert_eq!(
        std::fs::read_to_string(&deny).unwrap(),
        format!("{}\n", agent.fingerprint)
    );
}

#[test]
fn published_crls_are_0644_in_created_folders_0755_whatever_the_umask() {
    // certctl sets umask 077 itself; these modes must hold anyway.
    let env = TestEnv::new();
    let crl = env.root().join("pub/crl/ops/ops.crl");
    run(&env, &["ca", "init", "--name", "ops", "--crl-out", s(&crl)]).success();
    for dir in ["pub", "pub/crl", "pub/crl/ops"] {
        assert_eq!(dir_mode(&env.root().join(dir)), 0o755, "{dir}");
    }
    assert_eq!(regular_mode(&crl), 0o644);

    // Re-published after a revocation: still 0644.
    let out = env.mkdir("certs");
    let r = run(
        &env,
        &[
            "issue",
            "--ca",
            "ops",
            "--cn",
            "a.example.com",
            "--role",
            "gateway",
            "--out",
            s(&out),
        ],
    );
    r.success();
    let fp = issued_fingerprint(&r);
    run(
        &env,
        &["revoke", &fp[..16], "--reason", "key-compromise", "--yes"],
    )
    .success();
    assert_eq!(regular_mode(&crl), 0o644);

    // `ca crl --out`, and `ca export`, are public too.
    let one = env.root().join("pub/one.crl");
    run(&env, &["ca", "crl", "ops", "--out", s(&one)]).success();
    assert_eq!(regular_mode(&one), 0o644);
    let exported = env.root().join("pub/ops-ca.pem");
    run(&env, &["ca", "export", "ops", "--out", s(&exported)]).success();
    assert_eq!(regular_mode(&exported), 0o644);
}
