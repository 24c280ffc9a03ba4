//! A container's environment: the kubelet's own variables, `envFrom`, `env` with `$(VAR)`
//! expansion, and the downward API (`fieldRef`, `resourceFieldRef`), which volumes use too.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{ConfigMap, Container, Pod, Secret};
use kube::api::Api;

use super::context::Context;

/// Kubernetes' `$(VAR)` expansion in commands and env values; `$$` escapes.
pub fn expand(s: &str, vars: &BTreeMap<String, String>) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(stripped) = after.strip_prefix('$') {
            out.push('$');
            rest = stripped;
        } else if let Some(inner) = after.strip_prefix('(') {
            match inner.find(')') {
                Some(end) if vars.contains_key(&inner[..end]) => {
                    out.push_str(&vars[&inner[..end]]);
                    rest = &inner[end + 1..];
                }
                Some(end) => {
                    out.push_str(&rest[i..i + 2 + end + 1]);
                    rest = &inner[end + 1..];
                }
                None => {
                    out.push_str(&rest[i..]);
                    rest = "";
                }
            }
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

/// The downward API's view of the pod.
pub fn field_value(pod: &Pod, pod_ip: &str, path: &str) -> anyhow::Result<String> {
    let m = &pod.metadata;
    let quoted =
        |p: &str, prefix: &str| p.strip_prefix(prefix).and_then(|r| r.strip_suffix("']")).map(str::to_owned);
    let value = match path {
        "metadata.name" => m.name.clone().unwrap_or_default(),
        "metadata.namespace" => m.namespace.clone().unwrap_or_default(),
        "metadata.uid" => m.uid.clone().unwrap_or_default(),
        "metadata.labels" => kv_lines(m.labels.as_ref()),
        "metadata.annotations" => kv_lines(m.annotations.as_ref()),
        "spec.nodeName" => pod.spec.as_ref().and_then(|s| s.node_name.clone()).unwrap_or_default(),
        "spec.serviceAccountName" => {
            pod.spec.as_ref().and_then(|s| s.service_account_name.clone()).unwrap_or_default()
        }
        "status.podIP" | "status.podIPs" => pod_ip.to_owned(),
        "status.hostIP" | "status.hostIPs" => "127.0.0.1".to_owned(),
        p => {
            if let Some(k) = quoted(p, "metadata.labels['") {
                m.labels.as_ref().and_then(|l| l.get(&k).cloned()).unwrap_or_default()
            } else if let Some(k) = quoted(p, "metadata.annotations['") {
                m.annotations.as_ref().and_then(|l| l.get(&k).cloned()).unwrap_or_default()
            } else {
                anyhow::bail!("unsupported fieldRef {p:?}")
            }
        }
    };
    Ok(value)
}

fn kv_lines(map: Option<&BTreeMap<String, String>>) -> String {
    map.map(|m| m.iter().map(|(k, v)| format!("{k}={v:?}\n")).collect()).unwrap_or_default()
}

pub async fn container_env(
    ctx: &Context,
    pod: &Pod,
    c: &Container,
    ip: &str,
) -> anyhow::Result<Vec<(String, String)>> {
    let ns = pod.metadata.namespace.clone().unwrap_or_default();
    let mut vars: Vec<(String, String)> = vec![
        ("PATH".into(), "/berth/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into()),
        ("HOME".into(), "/root".into()),
        ("HOSTNAME".into(), pod.metadata.name.clone().unwrap_or_default()),
        ("KUBERNETES_SERVICE_HOST".into(), ctx.opts.kubernetes_service_ip.to_string()),
        ("KUBERNETES_SERVICE_PORT".into(), "443".into()),
        ("KUBERNETES_SERVICE_PORT_HTTPS".into(), "443".into()),
        ("KUBERNETES_PORT".into(), format!("tcp://{}:443", ctx.opts.kubernetes_service_ip)),
    ];
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &ns);
    let maps: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), &ns);
    for from in c.env_from.iter().flatten() {
        let prefix = from.prefix.clone().unwrap_or_default();
        if let Some(r) = &from.config_map_ref {
            match maps.get_opt(&r.name).await? {
                Some(cm) => vars.extend(
                    cm.data.unwrap_or_default().into_iter().map(|(k, v)| (format!("{prefix}{k}"), v)),
                ),
                None if r.optional == Some(true) => {}
                None => anyhow::bail!("configmap {ns}/{} not found", r.name),
            }
        }
        if let Some(r) = &from.secret_ref {
            match secrets.get_opt(&r.name).await? {
                Some(s) => vars.extend(
                    s.data
                        .unwrap_or_default()
                        .into_iter()
                        .map(|(k, v)| (format!("{prefix}{k}"), String::from_utf8_lossy(&v.0).into_owned())),
                ),
                None if r.optional == Some(true) => {}
                None => anyhow::bail!("secret {ns}/{} not found", r.name),
            }
        }
    }
    for e in c.env.iter().flatten() {
        let known: BTreeMap<String, String> = vars.iter().cloned().collect();
        let value = if let Some(v) = &e.value {
            expand(v, &known)
        } else if let Some(from) = &e.value_from {
            if let Some(f) = &from.field_ref {
                field_value(pod, ip, &f.field_path)?
            } else if let Some(s) = &from.secret_key_ref {
                let secret = secrets.get_opt(&s.name).await?;
                match secret.and_then(|x| x.data).and_then(|d| d.get(&s.key).cloned()) {
                    Some(v) => String::from_utf8_lossy(&v.0).into_owned(),
                    None if s.optional == Some(true) => continue,
                    None => anyhow::bail!("secret key {ns}/{}:{} not found", s.name, s.key),
                }
            } else if let Some(m) = &from.config_map_key_ref {
                let cm = maps.get_opt(&m.name).await?;
                match cm.and_then(|x| x.data).and_then(|d| d.get(&m.key).cloned()) {
                    Some(v) => v,
                    None if m.optional == Some(true) => continue,
                    None => anyhow::bail!("configmap key {ns}/{}:{} not found", m.name, m.key),
                }
            } else if let Some(r) = &from.resource_field_ref {
                resource_value(c, &r.resource)
            } else {
                String::new()
            }
        } else {
            String::new()
        };
        vars.retain(|(k, _)| k != &e.name);
        vars.push((e.name.clone(), value));
    }
    Ok(vars)
}

fn resource_value(c: &Container, resource: &str) -> String {
    let (kind, name) = resource.split_once('.').unwrap_or(("limits", resource));
    let r = c.resources.as_ref();
    let list = if kind == "requests" {
        r.and_then(|r| r.requests.as_ref())
    } else {
        r.and_then(|r| r.limits.as_ref())
    };
    list.and_then(|l| l.get(name)).map(|q| q.0.clone()).unwrap_or_else(|| match name {
        "cpu" => {
            std::thread::available_parallelism().map(|n| n.get().to_string()).unwrap_or_else(|_| "1".into())
        }
        _ => "0".into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn variable_expansion() {
        let vars: BTreeMap<String, String> = [("POD_IP".to_owned(), "127.100.0.2".to_owned())].into();
        assert_eq!(expand("--listen=$(POD_IP):5000", &vars), "--listen=127.100.0.2:5000");
        assert_eq!(expand("$$(POD_IP)", &vars), "$(POD_IP)");
        assert_eq!(expand("$(MISSING) $", &vars), "$(MISSING) $");
    }
}
