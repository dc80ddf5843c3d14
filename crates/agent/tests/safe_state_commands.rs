//! End-to-end: the commands that take a safe state, `/backup`, `/edit` and
//! `nu-agent backup`, through the built binary in pipe mode: what they
//! print, what they leave on disk, and that the background workers are as
//! they were afterwards.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use common::{field, file_bytes, text, wait_for, Sandbox};
use rusqlite::{Connection, OpenFlags};

/// The workers, in the order `/workers` lists them.
const WORKERS: [&str; 3] = [
    "exchange_summarizer",
    "conversation_summarizer",
    "embedding_generator",
];

/// The agent on the sandbox's database, with no editor settings from
/// whoever runs the tests.
fn agent(sandbox: &Sandbox) -> Command {
    let mut cmd = sandbox.command();
    cmd.env_remove("VISUAL").env_remove("EDITOR");
    cmd
}

/// Runs the agent in pipe mode on `input`; it must succeed. Returns its
/// standard output and standard error.
fn run(sandbox: &Sandbox, cmd: Command, input: &str) -> (String, String) {
    let out = sandbox.pipe_with(cmd, input);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(
        out.status.success(),
        "the agent failed on {input:?}\nstdout: {stdout}\nstderr: {stderr}"
    );
    (stdout, stderr)
}

/// Every `/workers` table in `stdout`, in order, each as worker name to
/// the state column.
fn worker_tables(stdout: &str) -> Vec<BTreeMap<String, String>> {
    let mut tables = Vec::new();
    let mut lines = stdout.lines();
    while let Some(line) = lines.next() {
        let mut words = line.split_whitespace();
        if words.next() == Some("worker") && words.next() == Some("state") {
            let table: BTreeMap<String, String> = lines
                .by_ref()
                .take(WORKERS.len())
                .map(|row| {
                    let mut words = row.split_whitespace();
                    let name = words.next().unwrap_or_default().to_owned();
                    let state = words.next().unwrap_or_default().to_owned();
                    (name, state)
                })
                .collect();
            let mut names: Vec<&str> = table.keys().map(String::as_str).collect();
            let mut expected = WORKERS.to_vec();
            names.sort_unstable();
            expected.sort_unstable();
            assert_eq!(
                names, expected,
                "a /workers table lists every worker: {stdout}"
            );
            tables.push(table);
        }
    }
    tables
}

/// The last `/workers` table in `stdout`.
fn last_worker_table(stdout: &str) -> BTreeMap<String, String> {
    worker_tables(stdout)
        .pop()
        .unwrap_or_else(|| panic!("no /workers table in the output: {stdout}"))
}

/// Asserts that exactly the workers in `paused` are paused in `table`,
/// and that every other one is running again (working or idle).
fn assert_paused_exactly(table: &BTreeMap<String, String>, paused: &[&str], stdout: &str) {
    for (name, state) in table {
        if paused.contains(&name.as_str()) {
            assert_eq!(state, "paused", "{name} should be paused: {stdout}");
        } else {
            assert!(
                state == "running" || state == "idle",
                "{name} should be running again, not {state}: {stdout}"
            );
        }
    }
    assert!(
        !stdout.contains("safe state(s) held"),
        "no safe state is left held: {stdout}"
    );
}

/// The `/status` line `name:` in the agent's output.
fn status_line(stdout: &str, name: &str) -> String {
    field(stdout, name).unwrap_or_else(|| panic!("no `{name}:` line in: {stdout}"))
}

/// What a successful `/backup` or `nu-agent backup` printed on its first
/// line.
#[derive(Debug)]
struct BackupReport {
    path: String,
    size: String,
    paused_ms: f64,
}

/// Reads the report line: `backed up to PATH (SIZE) in SECS s; workers
/// were paused for MS ms`.
fn backup_report(stdout: &str) -> BackupReport {
    let line = stdout
        .lines()
        .find(|line| line.starts_with("backed up to "))
        .unwrap_or_else(|| panic!("no backup report in: {stdout}"));
    let parse = || -> Option<BackupReport> {
        let rest = line.strip_prefix("backed up to ")?;
        // An agent reports how long its workers were paused; `nu-agent
        // backup`, with no workers, how long pinning the snapshot took.
        let (head, paused) = rest
            .rsplit_once("; workers were paused for ")
            .or_else(|| rest.rsplit_once("; the snapshot was pinned in "))?;
        let paused_ms = paused.strip_suffix(" ms")?.parse().ok()?;
        let (path_and_size, secs) = head.rsplit_once(" in ")?;
        secs.strip_suffix(" s")?.parse::<f64>().ok()?;
        let (path, size) = path_and_size.rsplit_once(" (")?;
        Some(BackupReport {
            path: path.to_owned(),
            size: size.strip_suffix(')')?.to_owned(),
            paused_ms,
        })
    };
    parse().unwrap_or_else(|| panic!("a backup report not in the expected form: {line}"))
}

/// A byte count as the agent prints it: `512 B`, `1.5 KiB`, `2.0 MiB`.
fn human_size(bytes: u64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < units.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", units[unit])
    }
}

/// Asserts the report names `dest` and its size, and gives a pause time.
fn assert_report_names(report: &BackupReport, dest: &Path) {
    assert_eq!(report.path, dest.display().to_string(), "{report:?}");
    let size = fs::metadata(dest).unwrap().len();
    assert_eq!(report.size, human_size(size), "{report:?}");
    assert!(report.paused_ms >= 0.0, "{report:?}");
}

/// Names in `dir` that a backup must never leave behind: its temporary
/// copy or its probe for a writable directory.
fn leftovers(dir: &Path) -> Vec<String> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.contains(".partial-") || name.contains(".nu-agent-probe-"))
        .collect()
}

/// Everything in `dir`, sorted.
fn listing(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

fn open_read_only(path: &Path) -> Connection {
    let conn = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap();
    conn.busy_timeout(Duration::from_secs(5)).unwrap();
    conn
}

fn count(conn: &Connection, sql: &str) -> i64 {
    conn.query_row(sql, [], |row| row.get(0)).unwrap()
}

/// Exchange ids of `conn`, in order.
fn exchange_ids(conn: &Connection) -> Vec<i64> {
    let mut stmt = conn
        .prepare("SELECT id FROM exchanges ORDER BY id")
        .unwrap();
    stmt.query_map([], |row| row.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

const EXCHANGE_SUMMARIES: &str = "SELECT count(*) FROM summaries WHERE subject = 'exchange'";

/// Opens a backup file and checks it is a sound, self-contained database.
fn open_backup(path: &Path) -> Connection {
    let conn = open_read_only(path);
    let verdict: String = conn
        .query_row("PRAGMA integrity_check", [], |row| row.get(0))
        .unwrap();
    assert_eq!(verdict, "ok", "the backup passes integrity_check");
    let journal: String = conn
        .query_row("PRAGMA journal_mode", [], |row| row.get(0))
        .unwrap();
    assert_eq!(journal, "delete", "the backup needs no write-ahead log");
    let dangling = {
        let mut stmt = conn.prepare("PRAGMA foreign_key_check").unwrap();
        let rows = stmt.query_map([], |_| Ok(())).unwrap();
        rows.count()
    };
    assert_eq!(dangling, 0, "every reference in the backup resolves");
    conn
}

/// Adds `exchanges` completed exchanges, with their messages, straight
/// into the database, in conversations of 50, each input and reply about
/// `text_len` bytes long.
fn add_completed_exchanges(db: &Path, exchanges: usize, text_len: usize) {
    let mut conn = Connection::open(db).unwrap();
    conn.busy_timeout(Duration::from_secs(5)).unwrap();
    let has_last_completed = conn
        .prepare(
            "SELECT 1 FROM pragma_table_info('conversations') WHERE name = 'last_completed_at'",
        )
        .unwrap()
        .exists([])
        .unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let filler = |seed: usize, what: &str| -> String {
        let mut text = format!("{what} number {seed}.");
        let mut word = 0;
        while text.len() < text_len {
            text.push_str(&format!(" The backlog item {seed} says word {word} here."));
            word += 1;
        }
        text
    };
    let tx = conn.transaction().unwrap();
    let mut conversation = 0;
    for n in 0..exchanges {
        let at = now - (exchanges - n) as i64 * 1000;
        if n % 50 == 0 {
            tx.execute("INSERT INTO conversations (started_at) VALUES (?1)", [at])
                .unwrap();
            conversation = tx.last_insert_rowid();
        }
        let input = filler(n, "Seeded question");
        let reply = filler(n, "Seeded answer");
        tx.execute(
            "INSERT INTO exchanges (conversation_id, status, user_input, reply, model,
                                    started_at, ended_at)
             VALUES (?1, 'completed', ?2, ?3, 'local', ?4, ?5)",
            rusqlite::params![conversation, input, reply, at, at + 10],
        )
        .unwrap();
        let exchange = tx.last_insert_rowid();
        for (role, content, when) in [("user", &input, at), ("assistant", &reply, at + 10)] {
            tx.execute(
                "INSERT INTO messages (conversation_id, exchange_id, role, content, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
                rusqlite::params![conversation, exchange, role, content, when],
            )
            .unwrap();
        }
        if has_last_completed {
            tx.execute(
                "UPDATE conversations SET last_completed_at = ?2 WHERE id = ?1",
                rusqlite::params![conversation, at + 10],
            )
            .unwrap();
        }
    }
    tx.commit().unwrap();
}

/// Writes an executable shell script `name` into `dir`.
fn script(dir: &Path, name: &str, body: &str) -> PathBuf {
    fs::create_dir_all(dir).unwrap();
    let path = dir.join(name);
    fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
    path
}

/// A tmpfs mounted for one test, unmounted when dropped.
struct TmpfsMount(PathBuf);

impl TmpfsMount {
    /// Mounts a tmpfs with `options` on the existing directory `dir`, or
    /// says why it could not.
    fn mount(dir: &Path, options: &str) -> Result<Self, String> {
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", options, "tmpfs"])
            .arg(dir)
            .output()
            .map_err(|err| format!("could not run mount: {err}"))?;
        if out.status.success() {
            Ok(Self(dir.to_owned()))
        } else {
            Err(format!(
                "mount -t tmpfs -o {options} failed: {}",
                text(&out.stderr).trim()
            ))
        }
    }
}

impl Drop for TmpfsMount {
    fn drop(&mut self) {
        let unmounted = Command::new("umount")
            .arg(&self.0)
            .status()
            .is_ok_and(|s| s.success());
        if !unmounted {
            // Busy for a moment: detach it, it goes once unused.
            let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        }
    }
}

/// `true` if this process can create a file in a directory of mode 0o555,
/// as root can: permission bits do not stop it.
fn permission_bits_are_ignored(scratch: &Path) -> bool {
    let dir = scratch.join("mode-probe");
    fs::create_dir(&dir).unwrap();
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o555)).unwrap();
    let ignored = fs::File::create(dir.join("probe")).is_ok();
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
    fs::remove_dir_all(&dir).unwrap();
    ignored
}

/// A fresh sandbox whose database exists and holds two exchanges.
fn sandbox_with_history() -> Sandbox {
    let sandbox = Sandbox::new();
    run(
        &sandbox,
        agent(&sandbox),
        "My favourite colour is green.\nThe garden has three apple trees.\n",
    );
    sandbox
}

// ---------------------------------------------------------------------------
// /backup

#[test]
fn backup_while_the_workers_work_through_a_backlog_copies_a_consistent_snapshot() {
    let sandbox = Sandbox::new();
    let out_dir = tempfile::tempdir().unwrap();
    // The workers stay off while the backlog is laid down; a backup works
    // with every worker disabled too.
    let early = out_dir.path().join("early.db");
    let (stdout, _) = run(
        &sandbox,
        agent(&sandbox),
        &format!(
            "/workers disable all\nhello\nMy boat is called Marigold.\n\
             What is my boat called?\n/backup {}\n",
            early.display()
        ),
    );
    assert_report_names(&backup_report(&stdout), &early);
    assert_eq!(exchange_ids(&open_backup(&early)).len(), 3);
    fs::remove_file(&early).unwrap();
    const SEEDED: usize = 800;
    add_completed_exchanges(&sandbox.db(), SEEDED, 600);
    {
        let conn = sandbox.conn();
        assert_eq!(count(&conn, "SELECT count(*) FROM exchanges"), 803);
        assert_eq!(
            count(&conn, EXCHANGE_SUMMARIES),
            0,
            "nothing summarised yet"
        );
    }

    let dest = out_dir.path().join("b.db");
    let line = "Remember that the backup runs while the workers are busy.";
    let mut child = sandbox.spawn(agent(&sandbox));
    let mut stdin = child.stdin.take().unwrap();
    writeln!(
        stdin,
        "/workers enable all\n{line}\n/backup {}",
        dest.display()
    )
    .unwrap();
    assert!(
        wait_for(|| dest.exists()),
        "the backup never appeared at {}",
        dest.display()
    );

    let backup = open_backup(&dest);
    let backed_up_summaries = count(&backup, EXCHANGE_SUMMARIES);
    let backed_up_exchanges = count(
        &backup,
        "SELECT count(*) FROM exchanges WHERE status = 'completed'",
    );
    let in_progress = backed_up_summaries < backed_up_exchanges;
    if in_progress {
        // The copy is of the moment the snapshot was pinned; the workers
        // went on after it, so the live database soon holds more.
        assert!(
            wait_for(
                || count(&open_read_only(&sandbox.db()), EXCHANGE_SUMMARIES) > backed_up_summaries
            ),
            "the workers did not carry on after the backup"
        );
    } else {
        println!(
            "note: the backlog was done before the backup pinned its snapshot; \
             only checking that the live database holds no fewer summaries"
        );
    }
    writeln!(stdin, "/workers\n/status").unwrap();
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "stdout: {stdout}\nstderr: {stderr}");
    assert!(!stderr.contains("error:"), "{stderr}");

    let report = backup_report(&stdout);
    assert_report_names(&report, &dest);
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("checked: ") && l.contains(" rows")),
        "{stdout}"
    );
    assert!(
        leftovers(out_dir.path()).is_empty(),
        "{:?}",
        listing(out_dir.path())
    );
    assert_eq!(listing(out_dir.path()), ["b.db"], "only the backup itself");

    // Every exchange recorded before the /backup line ran is in the copy,
    // the one just answered included.
    let live = sandbox.conn();
    let live_ids = exchange_ids(&live);
    let backup_ids = exchange_ids(&backup);
    assert_eq!(live_ids.len(), SEEDED + 4);
    assert_eq!(
        backup_ids, live_ids,
        "no exchange ran after the backup, so the copy has them all"
    );
    let last_input: String = backup
        .query_row(
            "SELECT user_input FROM exchanges ORDER BY id DESC LIMIT 1",
            [],
            |row| row.get(0),
        )
        .unwrap();
    assert_eq!(last_input, line);

    let live_summaries = count(&live, EXCHANGE_SUMMARIES);
    assert!(
        live_summaries >= backed_up_summaries,
        "live {live_summaries}, backup {backed_up_summaries}"
    );
    if in_progress {
        assert!(
            live_summaries > backed_up_summaries,
            "live {live_summaries}, backup {backed_up_summaries}"
        );
    }

    // The workers run again, and nothing is held.
    assert_paused_exactly(&last_worker_table(&stdout), &[], &stdout);
    assert_eq!(status_line(&stdout, "pauses"), "none paused", "{stdout}");
    assert_eq!(status_line(&stdout, "safe states"), "0 held", "{stdout}");
}

#[test]
fn backup_to_an_existing_file_is_refused_and_the_file_left_alone() {
    let sandbox = sandbox_with_history();
    let out_dir = tempfile::tempdir().unwrap();
    let dest = out_dir.path().join("precious.db");
    let before = b"not a database, but someone's file\n".repeat(100);
    fs::write(&dest, &before).unwrap();

    let (stdout, stderr) = run(
        &sandbox,
        agent(&sandbox),
        &format!("/backup {}\n/workers\n/status\n", dest.display()),
    );
    assert!(
        stderr.contains(&format!("error: {} already exists", dest.display())),
        "the error names the file: {stderr}"
    );
    assert!(stderr.contains("never overwrite"), "{stderr}");
    assert!(!stdout.contains("backed up to"), "{stdout}");
    assert!(
        file_bytes(&dest) == before,
        "the existing file is unchanged"
    );
    assert_eq!(listing(out_dir.path()), ["precious.db"]);
    assert_paused_exactly(&last_worker_table(&stdout), &[], &stdout);
    assert_eq!(status_line(&stdout, "safe states"), "0 held", "{stdout}");
}

#[test]
fn backup_to_an_unwritable_place_is_a_clear_error_and_creates_nothing() {
    let sandbox = sandbox_with_history();
    let scratch = tempfile::tempdir().unwrap();

    // A path under a regular file: unwritable for everyone, root included.
    let afile = scratch.path().join("afile");
    fs::write(&afile, b"a plain file\n").unwrap();
    let under_file = afile.join("sub").join("b.db");
    let (stdout, stderr) = run(
        &sandbox,
        agent(&sandbox),
        &format!("/backup {}\n/workers\n", under_file.display()),
    );
    assert!(
        stderr.contains(&format!(
            "error: could not create {}",
            afile.join("sub").display()
        )),
        "{stderr}"
    );
    assert!(!stdout.contains("backed up to"), "{stdout}");
    assert_eq!(fs::read(&afile).unwrap(), b"a plain file\n");
    assert_eq!(listing(scratch.path()), ["afile"], "nothing created");
    assert_paused_exactly(&last_worker_table(&stdout), &[], &stdout);

    // A directory this process may not write into.
    let (locked, _mount) = if permission_bits_are_ignored(scratch.path()) {
        // Root: permission bits do not stop it, a read-only file system
        // does. Where mounting is not allowed, the path under a regular
        // file above is the unwritable case that remains.
        let dir = scratch.path().join("readonly");
        fs::create_dir(&dir).unwrap();
        match TmpfsMount::mount(&dir, "ro,size=1m") {
            Ok(mount) => (dir, Some(mount)),
            Err(why) => {
                println!(
                    "skipped the read-only directory case ({why}); the path under a file \
                     above covers an unwritable destination"
                );
                return;
            }
        }
    } else {
        let dir = scratch.path().join("locked");
        fs::create_dir(&dir).unwrap();
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o555)).unwrap();
        (dir, None)
    };
    let dest = locked.join("b.db");
    let (stdout, stderr) = run(
        &sandbox,
        agent(&sandbox),
        &format!("/backup {}\n/workers\n", dest.display()),
    );
    let _ = fs::set_permissions(&locked, fs::Permissions::from_mode(0o755));
    assert!(
        stderr.contains(&format!("error: {} is not writable", locked.display())),
        "{stderr}"
    );
    assert!(!stdout.contains("backed up to"), "{stdout}");
    assert!(listing(&locked).is_empty(), "{:?}", listing(&locked));
    assert_paused_exactly(&last_worker_table(&stdout), &[], &stdout);
}

#[test]
fn backup_to_a_full_disk_is_refused_before_anything_is_written() {
    let sandbox = sandbox_with_history();
    add_completed_exchanges(&sandbox.db(), 300, 2048);
    let live_size = fs::metadata(sandbox.db()).unwrap().len();
    assert!(
        live_size > 256 * 1024,
        "the live database is {live_size} bytes"
    );

    let scratch = tempfile::tempdir().unwrap();
    let small = scratch.path().join("small");
    fs::create_dir(&small).unwrap();
    if !permission_bits_are_ignored(scratch.path()) {
        println!("skipped: mounting a small file system needs root");
        return;
    }
    let _mount = match TmpfsMount::mount(&small, "size=256k") {
        Ok(mount) => mount,
        Err(why) => {
            println!("skipped: {why}");
            return;
        }
    };
    let dest = small.join("b.db");
    let (stdout, stderr) = run(
        &sandbox,
        agent(&sandbox),
        &format!("/backup {}\n/workers\n/status\n", dest.display()),
    );
    assert!(
        stderr.contains(&format!("error: not enough room in {}", small.display())),
        "{stderr}"
    );
    assert!(!stdout.contains("backed up to"), "{stdout}");
    assert!(listing(&small).is_empty(), "{:?}", listing(&small));
    assert_paused_exactly(&last_worker_table(&stdout), &[], &stdout);
    assert_eq!(status_line(&stdout, "safe states"), "0 held", "{stdout}");
}

#[test]
fn a_file_that_appears_at_the_destination_during_the_copy_is_not_overwritten() {
    let sandbox = Sandbox::new();
    run(&sandbox, agent(&sandbox), "/workers disable all\nhello\n");
    // Large enough that the copy takes a while to write and check.
    add_completed_exchanges(&sandbox.db(), 200, 16 * 1024);

    let out_dir = tempfile::tempdir().unwrap();
    let dest = out_dir.path().join("b.db");
    let theirs = b"written by someone else while the copy ran\n";
    let mut child = sandbox.spawn(agent(&sandbox));
    let mut stdin = child.stdin.take().unwrap();
    writeln!(stdin, "/backup {}", dest.display()).unwrap();
    // As soon as the temporary copy shows, someone else takes the name.
    let deadline = std::time::Instant::now() + common::PATIENCE;
    let mut created = None;
    while std::time::Instant::now() < deadline {
        if !leftovers(out_dir.path()).is_empty() {
            created = Some(
                fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .open(&dest)
                    .and_then(|mut file| file.write_all(theirs)),
            );
            break;
        }
        if dest.exists() {
            break;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "stdout: {stdout}\nstderr: {stderr}");
    match created {
        Some(Ok(())) => {
            assert!(
                file_bytes(&dest) == theirs,
                "the file that appeared during the copy was overwritten"
            );
            assert!(
                stderr.contains(&format!("error: {} already exists", dest.display())),
                "{stderr}"
            );
            assert!(stderr.contains("never overwrite"), "{stderr}");
            assert!(!stdout.contains("backed up to"), "{stdout}");
        }
        _ => println!(
            "note: the backup finished before the test could take its name; \
             nothing to check"
        ),
    }
    assert!(
        leftovers(out_dir.path()).is_empty(),
        "{:?}",
        listing(out_dir.path())
    );
}

#[test]
fn backup_arguments_are_checked_before_anything_happens() {
    let sandbox = sandbox_with_history();
    let out_dir = tempfile::tempdir().unwrap();
    let (a, b) = (out_dir.path().join("a.db"), out_dir.path().join("b.db"));
    let (stdout, stderr) = run(
        &sandbox,
        agent(&sandbox),
        &format!(
            "/backup {} {}\n/backup {} --fast\n/workers\n",
            a.display(),
            b.display(),
            a.display()
        ),
    );
    assert!(stderr.contains("error: one destination only"), "{stderr}");
    assert!(stderr.contains("error: unknown option --fast"), "{stderr}");
    assert!(
        stderr.contains("usage: /backup [DEST] [--full]"),
        "{stderr}"
    );
    assert!(
        listing(out_dir.path()).is_empty(),
        "{:?}",
        listing(out_dir.path())
    );
    assert_paused_exactly(&last_worker_table(&stdout), &[], &stdout);
}

#[test]
fn backup_into_a_directory_gets_a_dated_name() {
    let sandbox = sandbox_with_history();
    let out_dir = tempfile::tempdir().unwrap();
    let (stdout, _) = run(
        &sandbox,
        agent(&sandbox),
        &format!("/backup {} --full\n", out_dir.path().display()),
    );
    let names = listing(out_dir.path());
    assert_eq!(names.len(), 1, "{names:?}");
    assert!(
        names[0].starts_with("memory-") && names[0].ends_with(".db"),
        "{names:?}"
    );
    let dest = out_dir.path().join(&names[0]);
    assert_report_names(&backup_report(&stdout), &dest);
    assert_eq!(exchange_ids(&open_backup(&dest)).len(), 2);
}

#[test]
fn workers_paused_by_the_user_stay_paused_across_a_backup() {
    let sandbox = sandbox_with_history();
    let out_dir = tempfile::tempdir().unwrap();
    let dest = out_dir.path().join("x.db");
    let (stdout, stderr) = run(
        &sandbox,
        agent(&sandbox),
        &format!(
            "/workers pause all\n/backup {}\n/workers\n/workers resume all\n/workers\n",
            dest.display()
        ),
    );
    assert!(!stderr.contains("error:"), "{stderr}");
    assert_report_names(&backup_report(&stdout), &dest);
    for name in WORKERS {
        assert!(stdout.contains(&format!("{name}: paused")), "{stdout}");
        assert!(stdout.contains(&format!("{name}: resumed")), "{stdout}");
    }
    let tables = worker_tables(&stdout);
    assert_eq!(tables.len(), 2, "{stdout}");
    // After the backup's safe state: the user's pauses still hold.
    for (name, state) in &tables[0] {
        assert_eq!(state, "paused", "{name} after the backup: {stdout}");
    }
    assert_paused_exactly(&tables[1], &[], &stdout);
}

// ---------------------------------------------------------------------------
// nu-agent backup

#[test]
fn offline_backup_works_when_no_agent_owns_the_database() {
    let sandbox = sandbox_with_history();
    let out_dir = tempfile::tempdir().unwrap();
    let dest = out_dir.path().join("offline.db");
    let out = sandbox.command().arg("backup").arg(&dest).output().unwrap();
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "stdout: {stdout}\nstderr: {stderr}");
    assert_report_names(&backup_report(&stdout), &dest);
    let backup = open_backup(&dest);
    assert_eq!(exchange_ids(&backup), exchange_ids(&sandbox.conn()));
    assert_eq!(listing(out_dir.path()), ["offline.db"]);

    // The ownership it held for the copy is released.
    run(&sandbox, agent(&sandbox), "one more thing\n");
    assert_eq!(sandbox.exchanges().len(), 3);
}

#[test]
fn offline_backup_is_refused_while_an_agent_owns_the_database() {
    let sandbox = sandbox_with_history();
    let mut owner = sandbox.spawn(agent(&sandbox));
    let pid = owner.id().to_string();
    assert!(
        wait_for(|| field(&sandbox.status(), "owner").is_some_and(|o| o.contains(&pid))),
        "the agent never took ownership"
    );

    let out_dir = tempfile::tempdir().unwrap();
    let dest = out_dir.path().join("offline.db");
    let out = sandbox.command().arg("backup").arg(&dest).output().unwrap();
    let stderr = text(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains(&format!("pid {pid}")), "{stderr}");
    assert!(stderr.contains("run /backup in that agent"), "{stderr}");
    assert!(listing(out_dir.path()).is_empty(), "nothing written");

    // The agent is unaffected and can still back itself up.
    let stdin = owner.stdin.as_mut().unwrap();
    writeln!(stdin, "/backup {}", dest.display()).unwrap();
    drop(owner.stdin.take());
    let Output { status, stdout, .. } = owner.wait_with_output().unwrap();
    assert!(status.success());
    assert_report_names(&backup_report(&text(&stdout)), &dest);
}

// ---------------------------------------------------------------------------
// /edit

/// Runs `/edit` in pipe mode with the user's own pause on the exchange
/// summarizer, `visual` and `editor` as the variables; checks that the
/// workers are afterwards as they were before and that the editor's file
/// is gone. Returns standard output and error.
fn edit(
    sandbox: &Sandbox,
    visual: Option<&str>,
    editor: Option<&str>,
    line: &str,
) -> (String, String) {
    let tmp = sandbox.dir.path().join("tmp");
    fs::create_dir_all(&tmp).unwrap();
    let mut cmd = agent(sandbox);
    cmd.env("TMPDIR", &tmp);
    if let Some(visual) = visual {
        cmd.env("VISUAL", visual);
    }
    if let Some(editor) = editor {
        cmd.env("EDITOR", editor);
    }
    let (stdout, stderr) = run(
        sandbox,
        cmd,
        &format!("/workers pause exchange_summarizer\n{line}\n/workers\n"),
    );
    assert!(
        stdout.contains("exchange_summarizer: paused"),
        "{stdout}\n{stderr}"
    );
    assert_paused_exactly(
        &last_worker_table(&stdout),
        &["exchange_summarizer"],
        &stdout,
    );
    assert!(
        listing(&tmp).is_empty(),
        "the editor's file is removed: {:?}",
        listing(&tmp)
    );
    (stdout, stderr)
}

/// The user inputs of the recorded exchanges.
fn inputs(sandbox: &Sandbox) -> Vec<String> {
    sandbox
        .exchanges()
        .into_iter()
        .map(|(status, input)| {
            assert_eq!(status, "completed", "{input}");
            input
        })
        .collect()
}

/// Shell that sets `$file` to the last argument, the file to edit.
const LAST_ARG: &str = "for file; do :; done";

#[test]
fn edit_sends_what_the_editor_saved() {
    let sandbox = Sandbox::new();
    let bin = sandbox.dir.path().join("bin");
    let writer = script(
        &bin,
        "writer",
        &format!("{LAST_ARG}\nprintf 'Plan the garden.\\nPlant three apple trees.\\n' > \"$file\""),
    );
    // The variable may carry arguments; the file comes last.
    let (stdout, stderr) = edit(
        &sandbox,
        None,
        Some(&format!("{} --wait", writer.display())),
        "/edit",
    );
    assert!(!stdout.contains("edit cancelled"), "{stdout}");
    assert!(!stderr.contains("error:"), "{stderr}");
    assert_eq!(
        inputs(&sandbox),
        ["Plan the garden.\nPlant three apple trees."]
    );
}

#[test]
fn edit_prefills_the_file_with_its_arguments() {
    let sandbox = Sandbox::new();
    let bin = sandbox.dir.path().join("bin");
    let appender = script(
        &bin,
        "appender",
        &format!("{LAST_ARG}\nprintf 'and the pears too\\n' >> \"$file\""),
    );
    edit(
        &sandbox,
        None,
        Some(&appender.display().to_string()),
        "/edit water the apples",
    );
    let inputs = inputs(&sandbox);
    assert_eq!(inputs.len(), 1, "{inputs:?}");
    assert!(inputs[0].contains("water the apples"), "{inputs:?}");
    assert!(inputs[0].contains("and the pears too"), "{inputs:?}");
    assert_eq!(inputs[0], "water the apples\nand the pears too");
}

#[test]
fn edit_is_cancelled_when_the_editor_fails() {
    let sandbox = Sandbox::new();
    let bin = sandbox.dir.path().join("bin");
    let failing = script(
        &bin,
        "failing",
        &format!("{LAST_ARG}\nprintf 'never sent\\n' > \"$file\"\nexit 3"),
    );
    let (stdout, _) = edit(
        &sandbox,
        None,
        Some(&failing.display().to_string()),
        "/edit",
    );
    assert!(
        stdout.contains("edit cancelled: the editor exited with status 3"),
        "{stdout}"
    );
    assert!(inputs(&sandbox).is_empty(), "no exchange was recorded");
}

#[test]
fn edit_is_cancelled_when_the_file_is_left_empty() {
    let sandbox = Sandbox::new();
    let bin = sandbox.dir.path().join("bin");
    let nothing = script(&bin, "nothing", "exit 0");
    let blank = script(
        &bin,
        "blank",
        &format!("{LAST_ARG}\nprintf '  \\n\\n' > \"$file\""),
    );
    let (stdout, _) = edit(
        &sandbox,
        None,
        Some(&nothing.display().to_string()),
        "/edit",
    );
    assert!(
        stdout.contains("edit cancelled: the file was left empty"),
        "{stdout}"
    );
    // Pre-filled, then emptied but for white space: nothing either.
    let (stdout, _) = edit(
        &sandbox,
        None,
        Some(&blank.display().to_string()),
        "/edit some words",
    );
    assert!(
        stdout.contains("edit cancelled: the file was left empty"),
        "{stdout}"
    );
    assert!(inputs(&sandbox).is_empty(), "no exchange was recorded");
}

#[test]
fn edit_with_a_missing_editor_is_a_clear_error() {
    let sandbox = Sandbox::new();
    let (stdout, stderr) = edit(&sandbox, None, Some("/nonexistent/editor"), "/edit");
    assert!(
        stderr.contains("error: could not run the editor \"/nonexistent/editor\""),
        "{stderr}"
    );
    assert!(stderr.contains("set VISUAL or EDITOR"), "{stderr}");
    assert!(!stdout.contains("edit cancelled"), "{stdout}");
    assert!(inputs(&sandbox).is_empty(), "no exchange was recorded");
}

#[test]
fn visual_wins_over_editor() {
    let sandbox = Sandbox::new();
    let bin = sandbox.dir.path().join("bin");
    let visual = script(
        &bin,
        "visual",
        &format!("{LAST_ARG}\nprintf 'written in the visual editor\\n' > \"$file\""),
    );
    let editor = script(
        &bin,
        "editor",
        &format!("{LAST_ARG}\nprintf 'written in the line editor\\n' > \"$file\""),
    );
    edit(
        &sandbox,
        Some(&visual.display().to_string()),
        Some(&editor.display().to_string()),
        "/edit",
    );
    assert_eq!(inputs(&sandbox), ["written in the visual editor"]);
}
