//! The image → command map: which local executable a container image stands for. A pod
//! whose image is not in the map stays `Pending` with `ErrImagePull`, as a node that cannot
//! pull it would leave it.

use std::{collections::BTreeMap, path::Path};

use serde_json::Value;

/// What runs for one image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageCommand {
    /// The image's entrypoint (Docker's ENTRYPOINT), an absolute path first.
    pub command: Vec<String>,
    /// Its default arguments (Docker's CMD).
    pub args: Vec<String>,
    /// Its environment (Docker's ENV): what the image sets for every container, before the
    /// container's own `env`, which overrides it. Where an image would ship files beside its
    /// program (the operator's speedscope), this says where they are on the node.
    pub env: BTreeMap<String, String>,
}

/// Images by name, with or without tag.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImageMap(BTreeMap<String, ImageCommand>);

/// Why the map could not be read.
#[derive(Debug, thiserror::Error)]
#[error("image map {path}: {message}")]
pub struct ImageMapError {
    path: String,
    message: String,
}

/// An image reference without its tag or digest (`ghcr.io/x/app:1.2` → `ghcr.io/x/app`).
fn repository(image: &str) -> &str {
    let image = image.split('@').next().unwrap_or(image);
    match image.rsplit_once(':') {
        Some((repo, tag)) if !tag.contains('/') => repo,
        _ => image,
    }
}

impl ImageMap {
    /// Reads `images: {<image>: {command: [...], args: [...], env: {NAME: value}}}` from
    /// YAML text.
    pub fn parse(text: &str, path: &Path) -> Result<Self, ImageMapError> {
        let err = |message: String| ImageMapError { path: path.display().to_string(), message };
        let doc: Value = serde_saphyr::from_str(text).map_err(|e| err(e.to_string()))?;
        let images = doc.get("images").and_then(Value::as_object).ok_or_else(|| err("no `images` map".into()))?;
        let mut map = BTreeMap::new();
        for (image, entry) in images {
            let command = crate::strings(entry.get("command"));
            if command.is_empty() {
                return Err(err(format!("{image}: `command` is empty")));
            }
            let mut env = BTreeMap::new();
            for (name, value) in entry.get("env").and_then(Value::as_object).into_iter().flatten() {
                let value = value.as_str().ok_or_else(|| err(format!("{image}: env {name} is not a string")))?;
                env.insert(name.clone(), value.to_owned());
            }
            map.insert(image.clone(), ImageCommand { command, args: crate::strings(entry.get("args")), env });
        }
        Ok(Self(map))
    }

    /// Reads the map from a file.
    pub fn load(path: &Path) -> Result<Self, ImageMapError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ImageMapError { path: path.display().to_string(), message: e.to_string() })?;
        Self::parse(&text, path)
    }

    /// The command of `image`: an exact entry first, then its repository without the tag.
    pub fn resolve(&self, image: &str) -> Option<&ImageCommand> {
        self.0.get(image).or_else(|| self.0.get(repository(image)))
    }
}

/// The argv of a container, as a runtime builds it: the container's `command` replaces the
/// image's entrypoint (and drops its default args), `args` replace the default args.
pub fn argv(image: &ImageCommand, command: &[String], args: &[String]) -> Vec<String> {
    let (entry, default_args) =
        if command.is_empty() { (&image.command, &image.args) } else { (&command.to_vec(), &Vec::new()) };
    let args = if args.is_empty() { default_args.clone() } else { args.to_vec() };
    entry.iter().cloned().chain(args).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_and_digests_fall_back_to_the_repository() {
        let map = ImageMap::parse("images:\n  ghcr.io/x/app: {command: [/bin/app], args: [--serve]}\n", Path::new("m"))
            .unwrap();
        assert!(map.resolve("ghcr.io/x/app:1.2").is_some());
        assert!(map.resolve("ghcr.io/x/app@sha256:abc").is_some());
        assert!(map.resolve("localhost:5000/app").is_none());
        assert!(map.resolve("ghcr.io/x/other:1").is_none());
    }

    #[test]
    fn an_image_carries_its_environment() {
        let text =
            "images:\n  ui: {command: [/bin/ui], env: {ASSETS: /opt/ui}}\n  bad: {command: [/bin/x], env: {N: 1}}\n";
        let err = ImageMap::parse(text, Path::new("m")).unwrap_err().to_string();
        assert_eq!(err, "image map m: bad: env N is not a string");
        let map =
            ImageMap::parse("images:\n  ui: {command: [/bin/ui], env: {ASSETS: /opt/ui}}\n", Path::new("m")).unwrap();
        assert_eq!(map.resolve("ui:1").unwrap().env, BTreeMap::from([("ASSETS".to_owned(), "/opt/ui".to_owned())]));
    }

    #[test]
    fn command_and_args_override_as_docker_does() {
        let image =
            ImageCommand { command: vec!["/bin/app".into()], args: vec!["--serve".into()], env: BTreeMap::new() };
        assert_eq!(argv(&image, &[], &[]), ["/bin/app", "--serve"]);
        assert_eq!(argv(&image, &[], &["--x".into()]), ["/bin/app", "--x"]);
        assert_eq!(argv(&image, &["/bin/sh".into()], &[]), ["/bin/sh"]);
    }
}
