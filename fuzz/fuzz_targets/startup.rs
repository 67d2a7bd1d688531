//! Hostile logins: the StartupMessage's parameters, and SCRAM-SHA-256 client messages (first and final)
//! against a real verifier, as pgpilot's authentication reads them.
#![no_main]
use libfuzzer_sys::fuzz_target;
use pgwire::api::auth::sasl::scram::ScramServerAuth;

fuzz_target!(|data: &[u8]| {
    let _ = pgpilot::frontend::startup::parse_params(data);
    // Split at the first 0xff: client-first message, then client-final message.
    let (first, last) = match data.iter().position(|&b| b == 0xff) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &b""[..]),
    };
    // Derived once: 4,096 PBKDF2 rounds per input would make this a benchmark of the key derivation.
    static VERIFIER: std::sync::OnceLock<pgpilot::config::secrets::Verifier> = std::sync::OnceLock::new();
    let verifier = VERIFIER.get_or_init(|| pgpilot::config::secrets::scram_from_plain("fuzz-password"));
    if let Ok((_, waiting)) = ScramServerAuth::new().on_client_first_message_with_secret(first, verifier.to_secret()) {
        let _ = waiting.on_client_final_message(last);
    }
});
