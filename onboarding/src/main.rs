//! `cip-onboarding`: the fleet operator's side of onboarding, on wfx's northbound API.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use clap::{Args, Parser, Subcommand};
use ed25519_dalek::SigningKey;
use serde_json::{Value, json};
use tokio::sync::Notify;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

use cip_onboarding::keys;
use cip_onboarding::northbound::North;
use cip_onboarding::operator::{self, Pending};
use cip_onboarding::protocol::{self, bootstrap_client_id, state};

#[derive(Parser)]
#[command(
    name = "cip-onboarding",
    version,
    about = "Onboard cip-update-agent devices through wfx: the fleet operator's tool"
)]
struct Cli {
    /// wfx northbound (management) API base URL.
    #[arg(
        long,
        global = true,
        env = "CIP_ONBOARDING_WFX",
        default_value = "http://127.0.0.1:8081/api/wfx/v1"
    )]
    wfx: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Make the fleet onboarding key pair (the public key goes into the device image).
    Keygen {
        /// The secret key file (written 0600; kept by the operator).
        #[arg(long, value_name = "FILE")]
        secret: PathBuf,
        /// The public key file (shipped as /usr/share/cip-update-agent/onboarding.pub).
        #[arg(long, value_name = "FILE")]
        public: PathBuf,
    },
    /// Open an onboarding job for each serial (skipped when one is open already).
    Enroll {
        /// A serial number (repeatable).
        #[arg(long, value_name = "S", required_unless_present = "serial_file")]
        serial: Vec<String>,
        /// A file of serials, one a line (`#` comments; further words on a line are ignored).
        #[arg(long, value_name = "FILE")]
        serial_file: Option<PathBuf>,
    },
    /// List the open onboarding jobs and the identities the devices sent.
    Pending {
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Give an identified device its client-id, signed with the fleet key.
    Approve {
        #[arg(long, value_name = "S")]
        serial: String,
        /// The client-id to give.
        #[arg(
            long,
            value_name = "ID",
            conflicts_with = "template",
            required_unless_present = "template"
        )]
        client_id: Option<String>,
        /// Naming template: `{serial}` and `{model}` are replaced, e.g. "dev-{serial}".
        #[arg(long, value_name = "T")]
        template: Option<String>,
        #[command(flatten)]
        key: KeyArg,
    },
    /// Refuse a device.
    Reject {
        #[arg(long, value_name = "S")]
        serial: String,
        /// Told to the device (and kept in the job status).
        #[arg(
            long,
            value_name = "TEXT",
            default_value = "rejected by the fleet operator"
        )]
        reason: String,
    },
    /// Follow the onboarding jobs and approve the serials listed in FILE as they identify.
    Serve {
        /// `SERIAL` or `SERIAL CLIENT-ID` a line, `#` comments; read again on every pass.
        #[arg(long, value_name = "FILE")]
        allow: PathBuf,
        /// Naming template for serials listed without a client-id.
        #[arg(long, value_name = "T", default_value = "dev-{serial}")]
        template: String,
        /// Reconciling poll besides the event stream.
        #[arg(long, value_name = "SECONDS", default_value_t = 30)]
        poll_secs: u64,
        #[command(flatten)]
        key: KeyArg,
    },
}

#[derive(Args)]
struct KeyArg {
    /// The fleet's secret onboarding key (from `keygen`).
    #[arg(long = "key", value_name = "FILE", env = "CIP_ONBOARDING_KEY")]
    path: PathBuf,
}

impl KeyArg {
    fn load(&self) -> anyhow::Result<SigningKey> {
        Ok(keys::read_signing(&self.path)?)
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // (A `Targets` filter, as the agent's: no regex engine in either binary.)
    let filter: tracing_subscriber::filter::Targets = std::env::var("CIP_ONBOARDING_LOG")
        .ok()
        .and_then(|f| f.parse().ok())
        .unwrap_or_else(|| {
            tracing_subscriber::filter::Targets::new().with_default(tracing::Level::INFO)
        });
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(std::io::stderr)
        .finish()
        .with(filter)
        .init();
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    if let Command::Keygen { secret, public } = &cli.command {
        let k = keys::generate()?;
        keys::write_pair(secret, public, &k)?;
        println!(
            "fleet onboarding key: {} (secret), {} (public: {})",
            secret.display(),
            public.display(),
            protocol::public_key_hex(&k.verifying_key())
        );
        return Ok(());
    }
    let north = North::new(&cli.wfx)?;
    match cli.command {
        Command::Keygen { .. } => Ok(()),
        Command::Enroll {
            serial,
            serial_file,
        } => enroll(&north, serial, serial_file.as_deref()).await,
        Command::Pending { json } => pending(&north, json).await,
        Command::Approve {
            serial,
            client_id,
            template,
            key,
        } => {
            let key = key.load()?;
            let job = open_job(&north, &serial).await?;
            let p = operator::pending_of(&job).context("wfx sent a job without id or status")?;
            let client_id = match (client_id, template) {
                (Some(c), _) => {
                    protocol::check_client_id(&c)?;
                    c
                }
                (None, Some(t)) => {
                    let model = p
                        .identity
                        .as_ref()
                        .map(|i| i.model.clone())
                        .unwrap_or_default();
                    operator::client_id_from_template(&t, &serial, &model)
                        .map_err(anyhow::Error::msg)?
                }
                (None, None) => bail!("--client-id or --template is needed"),
            };
            approve(&north, &key, &p, &serial, &client_id).await
        }
        Command::Reject { serial, reason } => {
            let job = open_job(&north, &serial).await?;
            let id = job["id"].as_str().unwrap_or_default().to_owned();
            north
                .put_status(&id, &json!({"state": state::REJECTED, "message": reason}))
                .await?;
            println!("{serial}: rejected (job {id})");
            Ok(())
        }
        Command::Serve {
            allow,
            template,
            poll_secs,
            key,
        } => {
            serve(
                &north,
                &key.load()?,
                &allow,
                &template,
                Duration::from_secs(poll_secs.max(1)),
            )
            .await
        }
    }
}

/// The serial's newest open onboarding job.
async fn open_job(north: &North, serial: &str) -> anyhow::Result<Value> {
    protocol::check_serial(serial)?;
    let jobs = north
        .jobs(&[
            ("clientId", &bootstrap_client_id(serial)),
            ("group", "OPEN"),
        ])
        .await?;
    jobs.into_iter()
        .last()
        .with_context(|| format!("{serial}: no open onboarding job (enroll it first)"))
}

async fn enroll(
    north: &North,
    mut serials: Vec<String>,
    file: Option<&Path>,
) -> anyhow::Result<()> {
    if let Some(f) = file {
        let text = std::fs::read_to_string(f).with_context(|| format!("{}", f.display()))?;
        serials.extend(
            operator::parse_serials(&text).map_err(|e| anyhow::anyhow!("{}: {e}", f.display()))?,
        );
    }
    for s in &serials {
        protocol::check_serial(s)?;
    }
    for s in serials {
        let client = bootstrap_client_id(&s);
        let open = north
            .jobs(&[("clientId", &client), ("group", "OPEN")])
            .await?;
        if let Some(j) = open.last() {
            println!(
                "{s}: already enrolled (job {}, {})",
                j["id"].as_str().unwrap_or("?"),
                j["status"]["state"].as_str().unwrap_or("?")
            );
            continue;
        }
        let job = north.create(&client, &json!({"serial": s})).await?;
        println!("{s}: enrolled (job {})", job["id"].as_str().unwrap_or("?"));
    }
    Ok(())
}

async fn pending(north: &North, as_json: bool) -> anyhow::Result<()> {
    let jobs = north.jobs(&[("group", "OPEN")]).await?;
    let rows: Vec<Pending> = jobs.iter().filter_map(operator::pending_of).collect();
    if as_json {
        let v: Vec<Value> = rows
            .iter()
            .map(|p| {
                let mut o = json!({"jobId": p.job_id, "clientId": p.client_id, "state": p.state,
                                   "serial": operator::serial_of_client_id(&p.client_id)});
                match &p.identity {
                    Ok(i) => o["identity"] = json!(i),
                    Err(e) => o["problem"] = json!(e),
                }
                o
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    println!(
        "{:<24} {:<12} {:<24} {:<18} NOTE",
        "SERIAL", "STATE", "MODEL", "DEVICE KEY"
    );
    for p in rows {
        let serial = operator::serial_of_client_id(&p.client_id).unwrap_or(&p.client_id);
        let (model, key, note) = match &p.identity {
            Ok(i) => (
                i.model.clone(),
                format!("{}...", &i.public_key[..16.min(i.public_key.len())]),
                match &i.refused {
                    Some(r) => format!("refused the last answer: {r}"),
                    None => "identity verified".into(),
                },
            ),
            Err(e) => ("-".into(), "-".into(), e.clone()),
        };
        println!(
            "{serial:<24} {:<12} {model:<24} {key:<18} {note} (job {})",
            p.state, p.job_id
        );
    }
    Ok(())
}

/// Writes the signed answer, then moves the job to APPROVED (in that order: a device that sees
/// APPROVED finds the answer already there).
async fn approve(
    north: &North,
    key: &SigningKey,
    p: &Pending,
    serial: &str,
    client_id: &str,
) -> anyhow::Result<()> {
    if p.state != state::IDENTIFIED && p.state != state::APPROVED {
        bail!(
            "{serial}: the device has not identified itself yet (job {} is {})",
            p.job_id,
            p.state
        );
    }
    let identity = p
        .identity
        .as_ref()
        .map_err(|e| anyhow::anyhow!("{serial}: job {}: {e}", p.job_id))?;
    if identity.serial != serial {
        bail!(
            "{serial}: job {} holds the identity of serial {}: not approved",
            p.job_id,
            identity.serial
        );
    }
    let answer = protocol::make_answer(key, &p.job_id, serial, &identity.public_key, client_id);
    north
        .put_definition(&p.job_id, &serde_json::to_value(&answer)?)
        .await?;
    north
        .put_status(
            &p.job_id,
            &json!({"state": state::APPROVED, "message": format!("approved as {client_id}")}),
        )
        .await?;
    println!("{serial}: approved as {client_id} (job {})", p.job_id);
    Ok(())
}

async fn serve(
    north: &North,
    key: &SigningKey,
    allow: &Path,
    template: &str,
    poll: Duration,
) -> anyhow::Result<()> {
    // The file must be readable at start; later read errors keep the last good list.
    let mut list = read_allow(allow)?;
    let wake = Arc::new(Notify::new());
    let events = tokio::spawn(follow(north.clone(), wake.clone()));
    let mut answered: HashSet<String> = HashSet::new();
    let mut warned: HashSet<String> = HashSet::new();
    tracing::info!("serving onboarding: {} serial(s) allowed", list.len());
    let stop = cip_onboarding::signals::interrupted();
    tokio::pin!(stop);
    loop {
        match read_allow(allow) {
            Ok(l) => list = l,
            Err(e) => tracing::warn!("{e:#}; keeping the last allow list"),
        }
        if let Err(e) = pass(north, key, &list, template, &mut answered, &mut warned).await {
            tracing::warn!("{e:#}");
        }
        tokio::select! {
            () = &mut stop => break,
            () = wake.notified() => {}
            () = tokio::time::sleep(poll) => {}
        }
    }
    events.abort();
    Ok(())
}

fn read_allow(path: &Path) -> anyhow::Result<BTreeMap<String, Option<String>>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("{}", path.display()))?;
    operator::parse_allow(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
}

/// One reconcile: every identified device on the list gets its answer.
async fn pass(
    north: &North,
    key: &SigningKey,
    list: &BTreeMap<String, Option<String>>,
    template: &str,
    answered: &mut HashSet<String>,
    warned: &mut HashSet<String>,
) -> anyhow::Result<()> {
    let jobs = north.jobs(&[("group", "OPEN")]).await?;
    for p in jobs.iter().filter_map(operator::pending_of) {
        // Identified, or the device refused the answer in the job (e.g. a forged one).
        let waiting = match &p.identity {
            _ if p.state == state::IDENTIFIED => true,
            Ok(i) => p.state == state::APPROVED && i.refused.is_some(),
            Err(_) => false,
        };
        if !waiting {
            continue;
        }
        let Some(serial) = operator::serial_of_client_id(&p.client_id) else {
            continue;
        };
        let Some(named) = list.get(serial) else {
            if warned.insert(p.job_id.clone()) {
                tracing::info!(job = %p.job_id, "{serial} is not on the allow list: left pending");
            }
            continue;
        };
        let identity = match &p.identity {
            Ok(i) => i,
            Err(e) => {
                if warned.insert(p.job_id.clone()) {
                    tracing::warn!(job = %p.job_id, "{serial}: {e}: not approved");
                }
                continue;
            }
        };
        // A device that refused this server's own answer would refuse it again (another
        // fleet key in its image?): say so once instead of answering in a loop.
        if let (Some(r), true) = (&identity.refused, answered.contains(&p.job_id)) {
            if warned.insert(p.job_id.clone()) {
                tracing::error!(job = %p.job_id, "{serial} refused the answer: {r}; not answering again");
            }
            continue;
        }
        let client_id = match named {
            Some(c) => c.clone(),
            None => match operator::client_id_from_template(template, serial, &identity.model) {
                Ok(c) => c,
                Err(e) => {
                    tracing::error!("{serial}: {e}");
                    continue;
                }
            },
        };
        match approve(north, key, &p, serial, &client_id).await {
            Ok(()) => {
                answered.insert(p.job_id.clone());
                tracing::info!(job = %p.job_id, "{serial}: approved as {client_id}");
            }
            Err(e) => tracing::warn!("{e:#}"),
        }
    }
    Ok(())
}

/// Wakes the serve loop on every onboarding event and after every (re)connect.
async fn follow(north: North, wake: Arc<Notify>) {
    loop {
        match north.events().await {
            Ok(mut ev) => {
                wake.notify_one();
                while ev.next().await.is_some() {
                    wake.notify_one();
                }
                tracing::debug!("event stream ended; reconnecting");
            }
            Err(e) => tracing::info!("event stream: {e}"),
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}
