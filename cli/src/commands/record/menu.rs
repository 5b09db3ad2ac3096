//! `cli record client`: the seed's interactive menu.

use std::io;
use std::path::Path;
use std::process::ExitCode;

use record_server::{ClientError, RecordId, StudentRecord};
use tokio::runtime::Runtime;

use super::session::Session;
use super::{ClientArgs, found, refusal, save_record};
use crate::commands::runtime;
use crate::prompt::Prompter;

/// The seed's menu, ending with its prompt.
const MENU: &str = "1. Write to the server\n2. Read from the server\n3. Exit\nEnter your choice: ";

/// Asks for the server's address unless given, connects, and runs the menu until the user exits
/// or the input ends.
pub fn run(args: ClientArgs) -> anyhow::Result<ExitCode> {
    let password = args.password.load()?;
    let mut input = Prompter::new();
    let Some(server) = server_address(&mut input, args.host, args.port)? else {
        return Ok(ExitCode::SUCCESS);
    };
    let mut menu = Menu {
        session: Session::new(server, args.patience.duration(), password),
        runtime: runtime()?,
        input,
        refused: false,
    };
    menu.runtime.block_on(menu.session.connect())?;
    menu.serve()?;
    drop(menu.session);
    println!("Connection closed successfully.");
    println!("Goodbye!");
    Ok(if menu.refused {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

/// `HOST:PORT` from the flags, or asked for; `None` if the input ended first.
fn server_address(
    input: &mut Prompter,
    host: Option<String>,
    port: Option<u16>,
) -> io::Result<Option<String>> {
    let host = match host {
        Some(host) => Some(host),
        None => input.ask_until("Enter server host: ", |host| match host {
            "" => Err("Please enter a host name or address.".to_owned()),
            host => Ok(host.to_owned()),
        })?,
    };
    let port = match port {
        Some(port) => Some(port),
        None => input.ask_until("Enter server port: ", |port| match port.parse() {
            Ok(0) | Err(_) => Err(format!(
                "{port:?} is not a port: enter a number from 1 to 65535."
            )),
            Ok(port) => Ok(port),
        })?,
    };
    Ok(host.zip(port).map(|(host, port)| match host.contains(':') {
        true => format!("[{host}]:{port}"),
        false => format!("{host}:{port}"),
    }))
}

/// The menu's state.
struct Menu {
    session: Session,
    runtime: Runtime,
    input: Prompter,
    /// Whether the server refused a request (the exit status is then 1).
    refused: bool,
}

impl Menu {
    fn serve(&mut self) -> anyhow::Result<()> {
        while let Some(choice) = self.input.ask(MENU)? {
            match choice.as_str() {
                "1" => self.write()?,
                "2" => self.read()?,
                "3" => break,
                "" => {}
                other => eprintln!("Invalid choice {other:?}: enter 1, 2 or 3."),
            }
        }
        Ok(())
    }

    /// Option 1: the form, sent; the server's answer printed.
    fn write(&mut self) -> anyhow::Result<()> {
        let Some(record) = self.ask_record()? else {
            return Ok(());
        };
        let outcome = self.runtime.block_on(self.session.write(&record));
        if let Some(confirmation) = self.answered(outcome)? {
            println!("{confirmation}");
        }
        Ok(())
    }

    /// Option 2: the record of an id, saved as `<id>.txt` in the current folder.
    fn read(&mut self) -> anyhow::Result<()> {
        let Some(id) = self.ask_id()? else {
            return Ok(());
        };
        let outcome = self.runtime.block_on(self.session.read(&id));
        if let Some(content) = self.answered(found(outcome))? {
            match save_record(Path::new("."), &id, &content) {
                Ok(path) => println!("Written requested file to {} successfully", path.display()),
                Err(err) => eprintln!("{}", crate::describe_error(&err)),
            }
        }
        Ok(())
    }

    /// The form; `None` if the input ended first.
    fn ask_record(&mut self) -> io::Result<Option<StudentRecord>> {
        let Some(id) = self.ask_id()? else {
            return Ok(None);
        };
        let mut field = |prompt| self.input.ask(prompt);
        let (Some(name), Some(date_of_birth), Some(city), Some(reason)) = (
            field("Enter your name: ")?,
            field("Enter your date of birth: ")?,
            field("Enter your city: ")?,
            field("Enter your reason to choose this class: ")?,
        ) else {
            return Ok(None);
        };
        Ok(Some(StudentRecord {
            id,
            name,
            date_of_birth,
            city,
            reason,
        }))
    }

    /// A student id, asked again until it is one the server accepts.
    fn ask_id(&mut self) -> io::Result<Option<String>> {
        self.input.ask_until("Enter your student ID: ", |id| {
            RecordId::parse(id)
                .map(|id| id.as_str().to_owned())
                .map_err(|invalid| invalid.to_string())
        })
    }

    /// The answer, or `None` once the server's refusal is shown; a failure to reach the server
    /// ends the session.
    fn answered<T>(&mut self, outcome: Result<T, ClientError>) -> anyhow::Result<Option<T>> {
        match refusal(outcome)? {
            Ok(answer) => Ok(Some(answer)),
            Err(reason) => {
                println!("{reason}");
                self.refused = true;
                Ok(None)
            }
        }
    }
}
