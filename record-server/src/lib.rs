//! System 1 (seed 000), not built yet: the JSON student-record store over TCP, its `.env`
//! configuration, the periodic timestamp updater and the scriptable client.
