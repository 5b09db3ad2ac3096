//! The TCP-versus-UDP file transfer (seed 003, task 3): under construction.
