//! One call through the agentsecrets proxy, from an async program.
//!
//! ```sh
//! printf '%s' "$STRIPE_SECRET" | agentsecrets secrets set STRIPE_KEY
//! agentsecrets workspace allowlist add api.stripe.com
//! cargo run -p agentsecrets-sdk --example call -- https://api.stripe.com/v1/balance STRIPE_KEY
//! ```
//!
//! A proxy is started if none is running. Set `AGENTSECRETS_TOKEN` to call as an issued
//! agent instead of the declared `sdk-example`.

use agentsecrets_sdk::{AgentSecrets, Error, Request};

#[tokio::main]
async fn main() -> Result<(), Error> {
    let mut args = std::env::args().skip(1);
    let url = args.next().unwrap_or_else(|| "https://api.stripe.com/v1/balance".to_owned());
    let key = args.next().unwrap_or_else(|| "STRIPE_KEY".to_owned());

    let client = AgentSecrets::builder().agent_id("sdk-example").session_id("example").build()?;
    client.ensure_proxy().await?;

    match client.call(Request::get(&url).bearer(&key)).await {
        Ok(response) => {
            let note = if response.redacted { " (an echoed secret was scrubbed)" } else { "" };
            println!("{}{note}", response.status);
            println!("{}", response.text());
            Ok(())
        }
        Err(Error::DomainNotAllowed { domain, .. }) => {
            eprintln!("allow the domain first: agentsecrets workspace allowlist add {domain}");
            std::process::exit(1);
        }
        Err(Error::SecretNotFound { key, .. }) => {
            eprintln!("store the secret first: agentsecrets secrets set {key}");
            std::process::exit(1);
        }
        Err(err) => Err(err),
    }
}
