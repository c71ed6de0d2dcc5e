use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    answers_api::cli::Cli::parse().run().await
}
