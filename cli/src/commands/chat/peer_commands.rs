//! The peer's typed commands (`/connect bob`, `/send notes.pdf`, a bare line of chat): parsing
//! only, so the loop in `peer` stays about what each one does.

use std::path::PathBuf;

use protocol::p2p::signal::Visibility;

/// What `/help` prints.
pub const HELP: &str = "\
Commands:
  /signup               create the account (--user) and log in
  /login                log in as --user and announce this peer's UDP address
  /list                 the peers you may see, with their state
  /connect USER         ask the server to introduce you to USER
  /accept [USER]        accept an introduction (the oldest waiting, or USER's)
  /decline [USER]       decline an introduction
  /msg TEXT             send TEXT to the peer of your session (a bare line does the same)
  /send FILE            send a file (reliable, checked with SHA-256)
  /stream FILE          stream a file at its real-time rate (never retransmitted; loss reported)
  /away, /back          decline introductions automatically, or take them again
  /visible all|none|USER,USER
                        who may see you, query you and ask to talk to you
  /close                end the session
  /quit                 close the session, log out and leave
  /help                 this list";

/// One line of the peer's input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerCommand {
    /// `/signup`
    Signup,
    /// `/login`
    Login,
    /// `/list`
    List,
    /// `/connect USER`
    Connect(String),
    /// `/accept [USER]`
    Accept(Option<String>),
    /// `/decline [USER]`
    Decline(Option<String>),
    /// `/msg TEXT` or a bare line.
    Message(String),
    /// `/send FILE`
    Send(PathBuf),
    /// `/stream FILE`
    Stream(PathBuf),
    /// `/away`
    Away,
    /// `/back`
    Back,
    /// `/visible all|none|USER,USER`
    Visible(Visibility),
    /// `/close`
    Close,
    /// `/quit`
    Quit,
    /// `/help`
    Help,
    /// An empty line: nothing to do.
    Nothing,
}

/// The command on `line`, or what is wrong with it.
pub fn parse(line: &str) -> Result<PeerCommand, String> {
    let line = line.trim_end_matches(['\r', '\n']);
    let Some(command) = line.strip_prefix('/') else {
        return Ok(if line.trim().is_empty() {
            PeerCommand::Nothing
        } else {
            PeerCommand::Message(line.to_owned())
        });
    };
    let (name, rest) = command.split_once(' ').unwrap_or((command, ""));
    let rest = rest.trim();
    match name {
        "signup" => no_argument(PeerCommand::Signup, name, rest),
        "login" => no_argument(PeerCommand::Login, name, rest),
        "list" => no_argument(PeerCommand::List, name, rest),
        "connect" => one_word(name, rest, "USER").map(PeerCommand::Connect),
        "accept" => optional_word(name, rest).map(PeerCommand::Accept),
        "decline" => optional_word(name, rest).map(PeerCommand::Decline),
        "msg" if rest.is_empty() => Err("/msg needs the text to send".to_owned()),
        "msg" => Ok(PeerCommand::Message(rest.to_owned())),
        "send" => path(name, rest).map(PeerCommand::Send),
        "stream" => path(name, rest).map(PeerCommand::Stream),
        "away" => no_argument(PeerCommand::Away, name, rest),
        "back" => no_argument(PeerCommand::Back, name, rest),
        "visible" => visibility(rest).map(PeerCommand::Visible),
        "close" => no_argument(PeerCommand::Close, name, rest),
        "quit" => no_argument(PeerCommand::Quit, name, rest),
        "help" => no_argument(PeerCommand::Help, name, rest),
        _ => Err(format!("unknown command /{name} (try /help)")),
    }
}

fn no_argument(command: PeerCommand, name: &str, rest: &str) -> Result<PeerCommand, String> {
    if rest.is_empty() {
        Ok(command)
    } else {
        Err(format!("/{name} takes no argument"))
    }
}

fn one_word(name: &str, rest: &str, what: &str) -> Result<String, String> {
    match optional_word(name, rest)? {
        Some(word) => Ok(word),
        None => Err(format!("/{name} needs {what}")),
    }
}

fn optional_word(name: &str, rest: &str) -> Result<Option<String>, String> {
    if rest.contains(char::is_whitespace) {
        return Err(format!("/{name} takes one username"));
    }
    Ok((!rest.is_empty()).then(|| rest.to_owned()))
}

fn path(name: &str, rest: &str) -> Result<PathBuf, String> {
    if rest.is_empty() {
        Err(format!("/{name} needs a file"))
    } else {
        Ok(PathBuf::from(rest))
    }
}

fn visibility(rest: &str) -> Result<Visibility, String> {
    match rest {
        "" => Err("/visible needs all, none or a list of usernames (bob,carol)".to_owned()),
        "all" => Ok(Visibility::Everyone),
        "none" => Ok(Visibility::Nobody),
        names => {
            let names: Vec<String> = names
                .split(',')
                .map(str::trim)
                .filter(|name| !name.is_empty())
                .map(str::to_owned)
                .collect();
            if names.is_empty() {
                Err("/visible needs at least one username".to_owned())
            } else {
                Ok(Visibility::Allow(names))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bare_lines_are_messages_and_blank_lines_nothing() {
        assert_eq!(
            parse("hello there"),
            Ok(PeerCommand::Message("hello there".into()))
        );
        assert_eq!(parse("  "), Ok(PeerCommand::Nothing));
        assert_eq!(parse("/msg  hi  "), Ok(PeerCommand::Message("hi".into())));
        assert!(parse("/msg").is_err());
    }

    #[test]
    fn commands_with_arguments() {
        assert_eq!(
            parse("/connect bob"),
            Ok(PeerCommand::Connect("bob".into()))
        );
        assert_eq!(parse("/accept"), Ok(PeerCommand::Accept(None)));
        assert_eq!(
            parse("/decline carol"),
            Ok(PeerCommand::Decline(Some("carol".into())))
        );
        assert_eq!(
            parse("/send my notes.pdf"),
            Ok(PeerCommand::Send(PathBuf::from("my notes.pdf")))
        );
        assert_eq!(
            parse("/stream a.wav"),
            Ok(PeerCommand::Stream("a.wav".into()))
        );
    }

    #[test]
    fn visibility_forms() {
        assert_eq!(
            parse("/visible all"),
            Ok(PeerCommand::Visible(Visibility::Everyone))
        );
        assert_eq!(
            parse("/visible none"),
            Ok(PeerCommand::Visible(Visibility::Nobody))
        );
        assert_eq!(
            parse("/visible bob, carol"),
            Ok(PeerCommand::Visible(Visibility::Allow(vec![
                "bob".into(),
                "carol".into()
            ])))
        );
        assert!(parse("/visible").is_err());
        assert!(parse("/visible ,").is_err());
    }

    #[test]
    fn mistakes_say_what_is_wrong() {
        assert_eq!(
            parse("/frobnicate"),
            Err("unknown command /frobnicate (try /help)".into())
        );
        assert_eq!(parse("/connect"), Err("/connect needs USER".into()));
        assert_eq!(
            parse("/connect bob carol"),
            Err("/connect takes one username".into())
        );
        assert_eq!(parse("/quit now"), Err("/quit takes no argument".into()));
        assert_eq!(parse("/send"), Err("/send needs a file".into()));
    }
}
