//! One call through the agentsecrets proxy, from a program without an async runtime.
//!
//! ```sh
//! agentsecrets proxy start &
//! cargo run -p agentsecrets-sdk --example blocking -- https://api.github.com/user GITHUB_TOKEN
//! ```

use agentsecrets_sdk::Request;
use agentsecrets_sdk::blocking::AgentSecrets;

fn main() -> Result<(), agentsecrets_sdk::Error> {
    let mut args = std::env::args().skip(1);
    let url = args.next().unwrap_or_else(|| "https://api.github.com/user".to_owned());
    let key = args.next().unwrap_or_else(|| "GITHUB_TOKEN".to_owned());

    let client = AgentSecrets::builder().agent_id("sdk-example").build()?;
    let request = Request::get(&url).bearer(&key).header("Accept", "application/json");
    let response = client.call(request)?;

    println!("{} (redacted: {})", response.status, response.redacted);
    println!("{}", response.text());
    Ok(())
}
