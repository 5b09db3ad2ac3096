//! The `cli` binary as a user runs it against the record server: `record-server` started,
//! configured by `.env` and stopped by signals; `record write|read|info` and the interactive
//! `record client` against in-process servers; authentication; the demo and the help texts.

use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener as StdListener, TcpStream};
use std::path::Path;
use std::process::{Child, ChildStdout, Command, ExitStatus, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use integration_tests::RunningServer;
use integration_tests::process::{run_with_stdin, stderr, stdout};
use record_server::{ServerConfig, Settings};
use tempfile::TempDir;
use tokio::runtime::Runtime;

const CLI: &str = env!("CARGO_BIN_EXE_cli");

/// How long anything the binary should do promptly may take.
const PATIENCE: Duration = Duration::from_secs(10);

/// The binary with no RUST_LOG and none of the server's settings in its environment.
fn cli(args: &[&str]) -> Command {
    let mut command = Command::new(CLI);
    command.args(args).env_remove("RUST_LOG");
    for key in record_server::config::KEYS {
        command.env_remove(key);
    }
    command
}

/// A record server running in this process, on its own runtime, with data in a temporary folder.
struct Server {
    runtime: Runtime,
    running: Option<RunningServer>,
    addr: String,
    data: TempDir,
}

impl Server {
    /// A server on the default settings.
    fn start() -> Server {
        Server::start_with(|_| {}, |_| {})
    }

    /// A server on the default settings as changed by `settings`, then `config`.
    fn start_with(
        settings: impl FnOnce(&mut Settings),
        config: impl FnOnce(&mut ServerConfig),
    ) -> Server {
        let data = tempfile::tempdir().unwrap();
        let mut defaults = Settings::defaults(data.path());
        defaults.file_path = data.path().join("data");
        defaults.record_path = data.path().to_owned();
        settings(&mut defaults);
        let (mut server_config, _) = ServerConfig::open(&defaults).unwrap();
        config(&mut server_config);
        let runtime = Runtime::new().unwrap();
        let running = runtime.block_on(RunningServer::start(|listener, shutdown| {
            record_server::run(listener, server_config, shutdown)
        }));
        let addr = running.addr.to_string();
        Server {
            runtime,
            running: Some(running),
            addr,
            data,
        }
    }

    /// `cli record <args> --server <this server>`.
    fn cli(&self, args: &[&str]) -> Command {
        let mut command = cli(&["record"]);
        command.args(args).args(["--server", &self.addr]);
        command
    }

    fn port(&self) -> String {
        self.addr.rsplit(':').next().unwrap().to_owned()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(running) = self.running.take() {
            self.runtime.block_on(running.stop());
        }
    }
}

/// A `cli record-server` process, its port read from its first line.
struct ServerProcess {
    child: Child,
    stdout: BufReader<ChildStdout>,
    stderr: JoinHandle<String>,
    port: u16,
}

impl ServerProcess {
    /// Runs `cli record-server <args>` in `cwd`.
    fn spawn(args: &[&str], cwd: &Path) -> ServerProcess {
        let mut child = cli(&["record-server"])
            .args(args)
            .current_dir(cwd)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut err = child.stderr.take().unwrap();
        let stderr = std::thread::spawn(move || {
            let mut text = String::new();
            err.read_to_string(&mut text).unwrap();
            text
        });
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut first = String::new();
        stdout.read_line(&mut first).unwrap();
        let port = first
            .strip_prefix("The server is ready to receive on port ")
            .and_then(|rest| rest.trim_end().strip_suffix('.'))
            .and_then(|port| port.parse().ok())
            .unwrap_or_else(|| panic!("unexpected first line {first:?}"));
        ServerProcess {
            child,
            stdout,
            stderr,
            port,
        }
    }

    fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// A raw connection to the server.
    fn connect(&self) -> TcpStream {
        let stream = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        stream.set_read_timeout(Some(PATIENCE)).unwrap();
        stream
    }

    /// Sends `signal` (`INT`, `TERM`) and waits for the process to end: its status, the rest of
    /// its stdout and all of its stderr.
    fn stop(mut self, signal: &str) -> (ExitStatus, String, String) {
        let killed = Command::new("kill")
            .args([&format!("-{signal}"), &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(killed.success());
        let deadline = Instant::now() + PATIENCE;
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            assert!(Instant::now() < deadline, "the server ignored SIG{signal}");
            std::thread::sleep(Duration::from_millis(20));
        };
        let mut rest = String::new();
        self.stdout.read_to_string(&mut rest).unwrap();
        (status, rest, self.stderr.join().unwrap())
    }
}

/// Sends `request` and reads the server's one response (it ends with `}` or a newline after it).
fn exchange(stream: &mut TcpStream, request: &str) -> String {
    stream.write_all(request.as_bytes()).unwrap();
    let mut response = Vec::new();
    let mut chunk = [0; 1024];
    while !response.trim_ascii_end().ends_with(b"}") {
        let n = stream.read(&mut chunk).unwrap();
        assert!(
            n > 0,
            "closed after {:?}",
            String::from_utf8_lossy(&response)
        );
        response.extend_from_slice(&chunk[..n]);
    }
    String::from_utf8(response).unwrap()
}

/// Whether the server closed `stream` cleanly (end of file, not a timeout).
fn closed_by_server(stream: &mut TcpStream) -> bool {
    let mut rest = Vec::new();
    stream.read_to_end(&mut rest).is_ok() && rest.is_empty()
}

/// A file holding `password` on its first line.
fn password_file(dir: &Path, name: &str, password: &str) -> String {
    let path = dir.join(name);
    fs::write(&path, format!("{password}\n")).unwrap();
    path.to_str().unwrap().to_owned()
}

fn write_args<'a>(id: &'a str, name: &'a str) -> Vec<&'a str> {
    vec![
        "write",
        "--id",
        id,
        "--name",
        name,
        "--dob",
        "23/11/2000",
        "--city",
        "Tekirdağ",
        "--reason",
        "To learn how the Internet works",
    ]
}

#[test]
fn sigint_with_two_clients_connected_closes_both_saves_and_exits_0() {
    let data = tempfile::tempdir().unwrap();
    let server = ServerProcess::spawn(
        &["--port", "0", "--data-dir", data.path().to_str().unwrap()],
        data.path(),
    );
    let mut writer = server.connect();
    let mut other = server.connect();
    let written = exchange(
        &mut writer,
        r#"{"client_ID": "150210710", "type": 1, "data": "Student ID: 150210710\nName: Fatih"}"#,
    );
    assert!(written.contains("File updated successfully."), "{written}");
    let info = exchange(&mut other, r#"{"client_id": "x", "type": 3, "data": ""}"#);
    assert!(info.contains(r#"\"connections\":2"#), "{info}");

    let (status, rest, log) = server.stop("INT");
    assert!(status.success(), "exited with {status}; log:\n{log}");
    assert_eq!(
        rest,
        "Server host: 127.0.0.1\nServer max connections: 64\nPress Ctrl+C to quit.\n\
         Server stopped with user keyboard interrupt.\nServer shut down.\n"
    );
    assert!(log.contains("Shutting down server..."), "{log}");
    assert_eq!(
        log.matches("Connection lost with client: ('127.0.0.1', ")
            .count(),
        2,
        "{log}"
    );
    assert!(closed_by_server(&mut writer) && closed_by_server(&mut other));
    let records = fs::read_to_string(data.path().join("records.json")).unwrap();
    assert!(records.contains("\"150210710\": \""), "{records}");
    let file = fs::read_to_string(data.path().join("data/150210710.txt")).unwrap();
    assert!(file.starts_with("Last updated: "), "{file}");
}

#[test]
fn sigterm_stops_the_server_with_its_own_line() {
    let data = tempfile::tempdir().unwrap();
    let server = ServerProcess::spawn(&["--port", "0", "--data-dir", "d"], data.path());
    let mut client = server.connect();
    exchange(&mut client, r#"{"client_id": "x", "type": 3, "data": ""}"#);
    let (status, rest, log) = server.stop("TERM");
    assert!(status.success(), "exited with {status}; log:\n{log}");
    assert!(
        rest.ends_with("Server stopped by SIGTERM.\nServer shut down.\n"),
        "{rest}"
    );
    assert!(log.contains("Connection lost with client:"), "{log}");
    assert!(closed_by_server(&mut client));
    assert!(
        data.path().join("d/records.json").is_file(),
        "--data-dir is relative to the current folder"
    );
}

#[test]
fn a_malformed_env_value_stops_start_up_naming_key_value_and_expectation() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(
        dir.path().join(".env"),
        "SERVER_PORT=0\nMAX_CONNECTION=ten\n",
    )
    .unwrap();
    let output = cli(&["record-server"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert_eq!(stdout(&output), "", "nothing printed as if ready");
    let message = stderr(&output);
    assert!(
        message.contains(r#"error: MAX_CONNECTION="ten""#)
            && message.contains(".env")
            && message.contains("expected a whole number >= 1"),
        "{message}"
    );
    assert!(
        !dir.path().join("record-data").exists(),
        "no data folder made"
    );
}

#[test]
fn the_env_file_in_the_current_folder_is_honoured_with_paths_relative_to_it() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(
        dir.path().join(".env"),
        "SERVER_PORT=0\nSERVER_HOST=\"localhost\"\nMAX_CONNECTION=7\nFILE_PATH=store/files\n\
         RECORD_PATH=store\nRECORD_FILE=index.json\n",
    )
    .unwrap();
    let server = ServerProcess::spawn(&[], dir.path());
    let output = cli(&["record"])
        .args(write_args("s1", "Ada"))
        .args(["--server", &server.addr()])
        .output()
        .unwrap();
    assert_eq!(stdout(&output), "File updated successfully.\n");
    let (status, rest, _) = server.stop("INT");
    assert!(status.success());
    assert!(
        rest.starts_with("Server host: localhost\nServer max connections: 7\n"),
        "{rest}"
    );
    assert!(dir.path().join("store/files/s1.txt").is_file());
    let index = fs::read_to_string(dir.path().join("store/index.json")).unwrap();
    assert!(index.contains("\"s1\""), "{index}");
}

#[test]
fn env_file_paths_are_relative_to_its_folder_and_flags_override_it() {
    let dir = tempfile::tempdir().unwrap();
    fs::create_dir(dir.path().join("conf")).unwrap();
    fs::write(
        dir.path().join("conf/server.env"),
        "SERVER_PORT=1\nMAX_CONNECTION=3\nFILE_PATH=data\nRECORD_PATH=.\n",
    )
    .unwrap();
    let server = ServerProcess::spawn(
        &["--env-file", "conf/server.env", "--port", "0"],
        dir.path(),
    );
    let (status, rest, _) = server.stop("INT");
    assert!(status.success());
    assert!(rest.contains("Server max connections: 3\n"), "{rest}");
    assert!(dir.path().join("conf/data").is_dir());
    assert!(dir.path().join("conf/records.json").is_file());
}

#[test]
fn write_read_and_info_from_scripts() {
    let server = Server::start();
    let output = server
        .cli(&write_args("150210710", "Fatih Baskın"))
        .output()
        .unwrap();
    assert_eq!(stdout(&output), "File updated successfully.\n");
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));

    let out = tempfile::tempdir().unwrap();
    let output = server
        .cli(&["read", "150210710", "--out", out.path().to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let saved = out.path().join("150210710.txt");
    assert_eq!(
        stdout(&output),
        format!("{}\n", std::path::absolute(&saved).unwrap().display())
    );
    let content = fs::read_to_string(&saved).unwrap();
    let (first, rest) = content.split_once('\n').unwrap();
    assert!(first.starts_with("Last updated: 20"), "{content}");
    assert_eq!(
        rest,
        "Student ID: 150210710\nName: Fatih Baskın\nDate of Birth: 23/11/2000\n\
         City: Tekirdağ\nReason: To learn how the Internet works"
    );
    assert_eq!(
        fs::read_dir(out.path()).unwrap().count(),
        1,
        "no temporary file left"
    );

    let output = server.cli(&["info"]).output().unwrap();
    assert_eq!(output.status.code(), Some(0));
    let info = stdout(&output);
    assert!(info.starts_with("connections: 1\nmax_connections: 64\nrecords: 1\nuptime_seconds: "));
    assert!(info.ends_with("\nrequire_auth: false\n"), "{info}");
}

#[test]
fn a_read_miss_exits_1_with_the_seeds_message_and_saves_nothing() {
    let server = Server::start();
    let out = tempfile::tempdir().unwrap();
    let output = server
        .cli(&["read", "999", "--out", out.path().to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    assert_eq!(stdout(&output), "");
    assert_eq!(stderr(&output), "Error reading file.\n");
    assert_eq!(fs::read_dir(out.path()).unwrap().count(), 0);
}

#[test]
fn an_id_that_is_a_path_is_refused_by_the_server_with_exit_1() {
    let server = Server::start();
    for args in [write_args("../x", "Eve"), vec!["read", "../x"]] {
        let output = server.cli(&args).output().unwrap();
        assert_eq!(output.status.code(), Some(1), "{args:?}");
        assert_eq!(
            stderr(&output),
            "Invalid client id \"../x\": use 1 to 32 characters from A-Z, a-z, 0-9, '_' and '-'.\n"
        );
    }
    assert!(!server.data.path().join("x.txt").exists());
}

#[test]
fn an_unreachable_server_exits_2() {
    let addr = StdListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .to_string();
    let output = cli(&["record", "info", "--server", &addr])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let message = stderr(&output);
    assert!(
        message.starts_with(&format!(
            "error: cannot connect to the record server at {addr}: "
        )),
        "{message}"
    );
    assert_eq!(
        message.matches("os error").count(),
        1,
        "said once: {message}"
    );
}

#[test]
fn the_interactive_client_works_from_a_pipe() {
    let server = Server::start();
    let cwd = tempfile::tempdir().unwrap();
    let output = run_with_stdin(
        cli(&[
            "record",
            "client",
            "--host",
            "127.0.0.1",
            "--port",
            &server.port(),
        ])
        .current_dir(cwd.path()),
        "1\n150210710\nFatih Baskın\n23/11/2000\nTekirdağ\nSockets\n4\n2\n150210710\n3\n",
    );
    let saved = cwd.path().canonicalize().unwrap().join("150210710.txt");
    assert_eq!(
        stdout(&output),
        format!(
            "File updated successfully.\nWritten requested file to {} successfully\n\
             Connection closed successfully.\nGoodbye!\n",
            saved.display()
        ),
        "no prompts when stdin is piped"
    );
    assert_eq!(stderr(&output), "Invalid choice \"4\": enter 1, 2 or 3.\n");
    assert_eq!(output.status.code(), Some(0));
    let content = fs::read_to_string(&saved).unwrap();
    assert!(content.starts_with("Last updated: "), "{content}");
    assert!(
        content.ends_with(
            "\nStudent ID: 150210710\nName: Fatih Baskın\nDate of Birth: 23/11/2000\n\
             City: Tekirdağ\nReason: Sockets"
        ),
        "{content}"
    );
}

#[test]
fn the_interactive_client_asks_for_the_address_and_ends_at_end_of_input() {
    let server = Server::start();
    let cwd = tempfile::tempdir().unwrap();
    let output = run_with_stdin(
        cli(&["record", "client"]).current_dir(cwd.path()),
        &format!("127.0.0.1\nport?\n{}\n2\n../etc\n77\n", server.port()),
    );
    assert_eq!(
        stdout(&output),
        "Error reading file.\nConnection closed successfully.\nGoodbye!\n"
    );
    let complaints = stderr(&output);
    assert!(
        complaints.contains("\"port?\" is not a port"),
        "{complaints}"
    );
    assert!(
        complaints.contains("Invalid client id \"../etc\""),
        "{complaints}"
    );
    assert_eq!(output.status.code(), Some(1), "a refused request exits 1");
    assert_eq!(fs::read_dir(cwd.path()).unwrap().count(), 0);
}

#[test]
fn with_require_auth_a_password_file_sets_then_checks_the_password() {
    let server = Server::start_with(
        |settings| settings.require_auth = true,
        |config| config.auth_failure_delay = Duration::from_millis(10),
    );
    let secrets = tempfile::tempdir().unwrap();
    let right = password_file(secrets.path(), "right", "correct horse");
    let wrong = password_file(secrets.path(), "wrong", "battery staple");

    let output = server.cli(&write_args("s7", "Ada")).output().unwrap();
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stderr(&output).starts_with("Not authorised"),
        "{}",
        stderr(&output)
    );

    let mut write = server.cli(&write_args("s7", "Ada"));
    let output = write.args(["--password-file", &right]).output().unwrap();
    assert_eq!(stdout(&output), "File updated successfully.\n");
    assert_eq!(stderr(&output), "Password set for client s7.\n");

    let out = secrets.path().to_str().unwrap();
    let output = server
        .cli(&["read", "s7", "--out", out, "--password-file", &right])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert_eq!(stderr(&output), "Authenticated as client s7.\n");
    assert!(secrets.path().join("s7.txt").is_file());

    let output = server
        .cli(&["read", "s7", "--out", out, "--password-file", &wrong])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    assert_eq!(stderr(&output), "Wrong password for client s7.\n");

    let hashes = fs::read_to_string(server.data.path().join("passwords.json")).unwrap();
    assert!(
        hashes.contains("s7") && hashes.contains("$argon2id$"),
        "{hashes}"
    );
    assert!(!hashes.contains("correct horse"));
}

#[test]
fn the_interactive_client_authenticates_with_a_password_file() {
    let server = Server::start_with(|settings| settings.require_auth = true, |_| {});
    let cwd = tempfile::tempdir().unwrap();
    let password = password_file(cwd.path(), "pw", "s3cret");
    let output = run_with_stdin(
        cli(&[
            "record",
            "client",
            "--host",
            "127.0.0.1",
            "--port",
            &server.port(),
        ])
        .args(["--password-file", &password])
        .current_dir(cwd.path()),
        "1\nA1\nAda\n1815\nLondon\nEngines\n2\nA1\n",
    );
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert!(
        stdout(&output).starts_with("File updated successfully.\nWritten requested file to "),
        "{}",
        stdout(&output)
    );
    assert_eq!(
        stderr(&output),
        "Password set for client A1.\n",
        "authenticated once per id and connection"
    );
}

#[test]
fn the_interactive_client_reconnects_and_authenticates_again_after_an_idle_timeout() {
    let server = Server::start_with(
        |settings| {
            settings.require_auth = true;
            settings.client_timeout = Duration::from_secs(1);
        },
        |_| {},
    );
    let cwd = tempfile::tempdir().unwrap();
    let password = password_file(cwd.path(), "pw", "s3cret");
    let mut child = cli(&[
        "record",
        "client",
        "--host",
        "127.0.0.1",
        "--port",
        &server.port(),
    ])
    .args(["--password-file", &password])
    .current_dir(cwd.path())
    .stdin(Stdio::piped())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut answers = BufReader::new(child.stdout.take().unwrap());
    let mut answer = String::new();
    stdin
        .write_all(b"1\nB2\nBob\n1990\nOslo\nFjords\n")
        .unwrap();
    answers.read_line(&mut answer).unwrap();
    assert_eq!(answer, "File updated successfully.\n");
    // The server closes the idle connection meanwhile.
    std::thread::sleep(Duration::from_millis(1500));
    stdin.write_all(b"2\nB2\n3\n").unwrap();
    drop(stdin);
    answer.clear();
    answers.read_line(&mut answer).unwrap();
    assert!(answer.starts_with("Written requested file to "), "{answer}");
    let output = child.wait_with_output().unwrap();
    assert_eq!(output.status.code(), Some(0));
    assert_eq!(
        stderr(&output),
        "Password set for client B2.\nAuthenticated as client B2.\n",
        "the new connection authenticated again"
    );
}

#[test]
fn the_demo_shows_the_record_server_on_the_wire_and_exits_0() {
    let output = cli(&["demo"]).output().unwrap();
    assert_eq!(output.status.code(), Some(0), "stderr: {}", stderr(&output));
    assert_eq!(stderr(&output), "", "a clean transcript");
    let transcript = stdout(&output);
    for expected in [
        r#"sent     b'{"client_ID": "150210710", "type": 1, "data": "Last updated: "#,
        r#"received b'{"client_id": "150210710", "type": 1, "data": "File updated successfully."}'"#,
        r#"received b'{"client_id": "150210710", "type": 1, "data": "Last updated: "#,
        r#"received b'{"client_id": "info", "type": 3, "data": "{\\"connections\\":1,"#,
        r#"received b'{"client_id": "None", "type": 2, "data": "Invalid request format, please send a valid JSON request."}'"#,
        "server stopped, records saved",
    ] {
        assert!(
            transcript.contains(expected),
            "missing {expected:?} in:\n{transcript}"
        );
    }
}

#[test]
fn help_explains_the_settings_and_every_flag() {
    let top = stdout(&cli(&["--help"]).output().unwrap());
    assert!(
        top.contains("record-server") && top.contains("record "),
        "{top}"
    );
    let server = stdout(&cli(&["record-server", "--help"]).output().unwrap());
    for text in record_server::config::KEYS.iter().chain(&[
        "--env-file",
        "--host",
        "--port",
        "--data-dir",
        "[12000]",
        "[127.0.0.1]",
        "record-data",
        "environment variables",
    ]) {
        assert!(
            server.contains(text),
            "record-server --help lacks {text}:\n{server}"
        );
    }
    for (command, flags) in [
        (
            "client",
            &["--host", "--port", "--password-file", "--timeout"][..],
        ),
        (
            "write",
            &[
                "--id",
                "--name",
                "--dob",
                "--city",
                "--reason",
                "--server",
                "--password-file",
            ],
        ),
        (
            "read",
            &["--out", "--server", "--password-file", "--timeout"],
        ),
        ("info", &["--server", "--timeout"]),
    ] {
        let help = stdout(&cli(&["record", command, "--help"]).output().unwrap());
        for flag in flags {
            assert!(
                help.contains(flag),
                "record {command} --help lacks {flag}:\n{help}"
            );
        }
    }
}
