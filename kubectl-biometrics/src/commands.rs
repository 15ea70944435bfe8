//! Each subcommand: reach the browser (or the API server), decide with [`crate::select`],
//! print with [`crate::pprof`] and [`crate::table`]. Results go to stdout; what the user
//! should know about them (which run was chosen, warnings) goes to stderr, so that stdout
//! can be compared with pprof's or piped.

use std::time::Duration;

use biometrics_crds::{
    profile::ProfileType,
    v1alpha1::{CaptureRun, RunResult},
};

use crate::{
    browser::{Browser, Query, segment},
    cli::{Cli, Command, Global, Report},
    cluster::{self, Operator, Tunnel},
    error::{Error, Result},
    fetch, pprof, reference, select, table,
};

/// The browser, reached one way or the other, and the namespace commands act in.
struct Session {
    browser: Browser,
    namespace: String,
    /// Kept open for as long as the session lives.
    tunnel: Option<Tunnel>,
}

async fn session(global: &Global, local_port: u16) -> Result<Session> {
    let timeout = global.request_timeout.as_std();
    if let Some(ui) = &global.ui {
        let from_kubeconfig = cluster::kubeconfig_namespace(global.kubeconfig.as_deref(), global.context.as_deref());
        let namespace = cluster::namespace(global.namespace.as_deref(), from_kubeconfig.as_deref());
        let browser = Browser::new(ui, timeout)?.with_token(global.token.clone());
        return Ok(Session { browser, namespace, tunnel: None });
    }
    let (client, default_namespace) = cluster::client(global.kubeconfig.as_deref(), global.context.as_deref()).await?;
    let operator = Operator {
        namespace: &global.operator_namespace,
        deployment: &global.operator_deployment,
        port: global.ui_port,
    };
    let tunnel = cluster::open_tunnel(&client, &operator, local_port).await?;
    let browser = Browser::new(&format!("http://{}", tunnel.local), timeout)?
        .with_tunnel_errors(tunnel.errors.clone())
        .with_token(global.token.clone());
    let namespace = cluster::namespace(global.namespace.as_deref(), Some(&default_namespace));
    Ok(Session { browser, namespace, tunnel: Some(tunnel) })
}

fn warn(warnings: &[String]) {
    for w in warnings {
        eprintln!("warning: {}", one_line(w));
    }
}

/// Text from elsewhere (the browser, the API server) on one line.
pub fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Runs the command.
pub async fn run(cli: Cli) -> Result<()> {
    let global = &cli.global;
    match &cli.command {
        Command::Runs { capture } => runs(global, capture).await,
        Command::Top { capture, report, run } => top(global, capture, report, run.as_deref()).await,
        Command::Fetch { capture, run, output, force } => {
            fetch_run(global, capture, run.as_deref(), output, *force).await
        }
        Command::Diff { capture, report, base, run } => {
            diff(global, capture, report, base.as_deref(), run.as_deref()).await
        }
        Command::Capture { capture, wait, timeout, profile } => {
            capture_now(global, capture, *wait, timeout.as_std(), *profile).await
        }
        Command::Open { capture, port, browser } => open(global, capture.as_deref(), *port, *browser).await,
    }
}

async fn runs(global: &Global, capture: &str) -> Result<()> {
    let name = reference::parse(capture)?;
    let s = session(global, 0).await?;
    let detail = s.browser.capture(&s.namespace, &name).await?;
    warn(&detail.warnings);
    if detail.runs.is_empty() {
        eprintln!("No runs of ProfileCapture {}/{name} yet.", s.namespace);
    } else {
        print!("{}", table::runs(&detail));
    }
    Ok(())
}

fn query(report: &Report) -> Query<'_> {
    Query { profile: report.profile.as_str(), pod: report.pod.as_deref(), nodecount: report.nodecount }
}

async fn top(global: &Global, capture: &str, report: &Report, run: Option<&str>) -> Result<()> {
    let name = reference::parse(capture)?;
    let s = session(global, 0).await?;
    let detail = s.browser.capture(&s.namespace, &name).await?;
    warn(&detail.warnings);
    let chosen = select::run(&detail, run)?;
    let view = s.browser.top(&s.namespace, &name, &chosen.id, &query(report)).await?;
    eprintln!(
        "Run {} of ProfileCapture {}/{name}, {} profile of {}",
        view.run,
        s.namespace,
        view.profile,
        if view.pods.is_empty() { "no pod".to_owned() } else { view.pods.join(", ") }
    );
    let summary = pprof::Top {
        sample_type: &view.sample_type,
        total: view.total,
        duration_nanos: view.duration_seconds.map(|s| (s * 1e9).round() as i64),
        functions: &view.functions,
    };
    print!("{}", pprof::render_top(&summary, &report.unit));
    Ok(())
}

async fn diff(global: &Global, capture: &str, report: &Report, base: Option<&str>, run: Option<&str>) -> Result<()> {
    let name = reference::parse(capture)?;
    let s = session(global, 0).await?;
    let detail = s.browser.capture(&s.namespace, &name).await?;
    warn(&detail.warnings);
    let chosen = select::run(&detail, run)?;
    let base = select::base(&detail, chosen, base)?;
    let view = s.browser.compare(&s.namespace, &name, &base.id, &chosen.id, &query(report)).await?;
    eprintln!(
        "Run {} against {} of ProfileCapture {}/{name}, {} profile",
        view.run, view.base, s.namespace, view.profile
    );
    print!("{}", table::compare(&view, &report.unit));
    Ok(())
}

async fn fetch_run(
    global: &Global,
    capture: &str,
    run: Option<&str>,
    dir: &std::path::Path,
    force: bool,
) -> Result<()> {
    let name = reference::parse(capture)?;
    let s = session(global, 0).await?;
    let detail = s.browser.capture(&s.namespace, &name).await?;
    let chosen = select::run(&detail, run)?;
    let listing = s.browser.run(&s.namespace, &name, &chosen.id).await?;
    warn(&listing.warnings);
    let (planned, mut failed) = fetch::plan(&listing, dir);
    let total = planned.len() + failed.len();
    if total == 0 {
        eprintln!("Run {} of ProfileCapture {}/{name} has no files.", chosen.id, s.namespace);
        return Ok(());
    }
    eprintln!("Run {} of ProfileCapture {}/{name}: {total} files", chosen.id, s.namespace);
    for file in &planned {
        match fetch::fetch(&s.browser, file, force).await {
            Ok(outcome) => {
                let what = match outcome {
                    fetch::Outcome::Written => "wrote",
                    fetch::Outcome::Unchanged => "unchanged",
                };
                println!("{what} {} ({} bytes, sha256 {})", file.path.display(), file.bytes, file.sha256);
            }
            Err(e) => failed.push(e),
        }
    }
    match failed.len() {
        0 => Ok(()),
        1 => Err(failed.remove(0)),
        n => {
            for e in &failed {
                eprintln!("error: {}", one_line(&e.to_string()));
            }
            Err(Error::FetchIncomplete { failed: n, total })
        }
    }
}

/// A capture-now value no earlier request used: the time, to the nanosecond.
fn fresh_value() -> String {
    jiff::Timestamp::now().to_string()
}

async fn capture_now(
    global: &Global,
    capture: &str,
    wait: bool,
    timeout: Duration,
    profile: Option<ProfileType>,
) -> Result<()> {
    let name = reference::parse(capture)?;
    let (client, default_namespace) = cluster::client(global.kubeconfig.as_deref(), global.context.as_deref()).await?;
    let namespace = cluster::namespace(global.namespace.as_deref(), Some(&default_namespace));
    let before = cluster::get_capture(&client, &namespace, &name).await?;
    let before = before.status.and_then(|s| s.last_run).map(|r| r.id);
    let value = fresh_value();
    cluster::request_capture(&client, &namespace, &name, &value).await?;
    eprintln!(
        "Requested a run of ProfileCapture {namespace}/{name} ({}={value})",
        biometrics_crds::CAPTURE_NOW_ANNOTATION
    );
    if !wait {
        return Ok(());
    }
    let mut announced = false;
    let outcome =
        cluster::poll(&client, &namespace, &name, timeout, "the requested run", |pc| {
            match select::progress(pc.status.as_ref(), &value, before.as_deref()) {
                select::Progress::Requested => None,
                select::Progress::Running(run) => {
                    if !announced {
                        eprintln!("Run {} started", run.id);
                        announced = true;
                    }
                    None
                }
                select::Progress::Finished(run) => Some(Ok(Finished::Run(Box::new(run.clone())))),
                select::Progress::Superseded(summary) => {
                    Some(Ok(Finished::Superseded(summary.id.clone(), summary.result)))
                }
                select::Progress::Skipped => Some(Err(Error::RunSkipped {
                    namespace: namespace.clone(),
                    name: name.clone(),
                    value: value.clone(),
                })),
            }
        })
        .await??;
    match outcome {
        Finished::Run(run) => print_run(&namespace, &name, &run, profile),
        Finished::Superseded(id, result) => {
            println!("Run {id} {result:?}.");
            eprintln!(
                "A newer run has replaced it in the status; its top functions: kubectl biometrics top pcap/{name} -n {namespace} --run {id}"
            );
            failed_result(&namespace, &name, &id, result, String::new())
        }
    }
}

enum Finished {
    Run(Box<CaptureRun>),
    Superseded(String, RunResult),
}

fn failed_result(namespace: &str, name: &str, run: &str, result: RunResult, why: String) -> Result<()> {
    if result == RunResult::Failed {
        return Err(Error::RunFailed {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            run: run.to_owned(),
            result: format!("failed{why}"),
        });
    }
    Ok(())
}

/// The finished run's result, then each pod's profiles' top functions from the status
/// (the five it keeps per profile), as pprof prints them.
fn print_run(namespace: &str, name: &str, run: &CaptureRun, only: Option<ProfileType>) -> Result<()> {
    let ok = run.pods.iter().filter(|p| p.result == RunResult::Succeeded).count();
    println!("Run {} {:?}: {ok} of {} pods succeeded", run.id, run.result, run.pods.len());
    let mut problems = Vec::new();
    for pod in &run.pods {
        if let Some(error) = &pod.error {
            problems.push(format!("{}: {}", pod.pod, one_line(error)));
        }
        for profile in pod.profiles.iter().filter(|p| only.is_none_or(|o| o == p.profile_type)) {
            if let Some(error) = &profile.error {
                problems.push(format!("{} {}: {}", pod.pod, profile.profile_type, one_line(error)));
                continue;
            }
            if profile.top.is_empty() {
                continue;
            }
            println!();
            println!("Pod {}, {} profile ({}):", pod.pod, profile.profile_type, profile.path.as_deref().unwrap_or("?"));
            let top = pprof::Top {
                sample_type: profile.sample_type.as_deref().unwrap_or("samples/count"),
                total: profile.total.unwrap_or(0),
                duration_nanos: None,
                functions: &profile.top,
            };
            print!("{}", pprof::render_top(&top, "minimum"));
        }
    }
    if run.result == RunResult::Failed {
        let why = if problems.is_empty() { String::new() } else { format!(": {}", problems.join("; ")) };
        return failed_result(namespace, name, &run.id, run.result, why);
    }
    for p in &problems {
        eprintln!("warning: {p}");
    }
    Ok(())
}

async fn open(global: &Global, capture: Option<&str>, port: u16, desktop: bool) -> Result<()> {
    let name = capture.map(reference::parse).transpose()?;
    let s = session(global, port).await?;
    // Ask once, so that a wrong name or an unreachable browser is one line now rather than
    // an error page later.
    let page = match &name {
        Some(name) => {
            s.browser.capture(&s.namespace, name).await?;
            format!("/captures/{}/{}", segment(&s.namespace), segment(name))
        }
        None => {
            s.browser.json::<Vec<biometrics_ui::api::CaptureRow>>("/api/v1/captures").await?;
            "/".to_owned()
        }
    };
    let url = s.browser.url(&page);
    println!("{url}");
    if desktop {
        let opener = if cfg!(target_os = "macos") { "open" } else { "xdg-open" };
        if let Err(e) = std::process::Command::new(opener).arg(&url).spawn() {
            eprintln!("warning: {opener}: {e}; open the address above yourself");
        }
    }
    if let Some(tunnel) = &s.tunnel {
        eprintln!(
            "Forwarding {} to port {} of pod {}/{}; Ctrl-C to stop",
            tunnel.local, global.ui_port, global.operator_namespace, tunnel.pod
        );
        let _ = tokio::signal::ctrl_c().await;
    }
    Ok(())
}
