//! Limit an agent to one secret and one method, then ask the proxy what it would decide
//! about two calls of that agent before making either.
//!
//! ```sh
//! agentsecrets agent token issue billing-tool --output json   # note the token
//! agentsecrets proxy start &
//! cargo run -p agentsecrets-sdk --example policy -- agt_... https://api.stripe.com/v1/balance
//! ```

use agentsecrets_sdk::{AgentSecrets, Contract, Error, Request};

#[tokio::main]
async fn main() -> Result<(), Error> {
    let mut args = std::env::args().skip(1);
    let token = args.next().unwrap_or_default();
    let url = args.next().unwrap_or_else(|| "https://api.stripe.com/v1/balance".to_owned());

    // Contracts are administration: this runs the agentsecrets binary on the local home.
    let admin = AgentSecrets::builder().build()?;
    let contract = Contract {
        allow_secrets: vec!["STRIPE_KEY".to_owned()],
        allow_methods: vec!["GET".to_owned()],
        ..Contract::default()
    };
    admin.set_policy("billing-tool", &contract).await?;

    let agent = AgentSecrets::builder().agent_token(token).session_id("policy-example").build()?;
    for request in
        [Request::get(&url).bearer("STRIPE_KEY"), Request::post(&url).bearer("STRIPE_KEY")]
    {
        let explained = agent.explain(request).await?;
        let why = explained.rule.or(explained.message).unwrap_or_default();
        println!("{:<5} {why}", explained.decision);
    }
    Ok(())
}
