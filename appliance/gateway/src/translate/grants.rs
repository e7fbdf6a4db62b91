//! ReferenceGrant checks for cross-namespace references.

use crate::index::Index;

/// The referring side of a reference: group, kind and namespace.
pub(super) struct From<'a> {
    pub group: &'a str,
    pub kind: &'a str,
    pub namespace: &'a str,
}

/// The referent: group, kind, namespace and name.
pub(super) struct To<'a> {
    pub group: &'a str,
    pub kind: &'a str,
    pub namespace: &'a str,
    pub name: &'a str,
}

/// Whether the reference is allowed: same namespace, or a ReferenceGrant in the referent's
/// namespace lists the referrer in `from` and the referent in `to`.
pub(super) fn permits(index: &Index, from: &From<'_>, to: &To<'_>) -> bool {
    if from.namespace == to.namespace {
        return true;
    }
    index
        .reference_grants
        .range((to.namespace.to_owned(), String::new())..)
        .take_while(|((ns, _), _)| ns == to.namespace)
        .any(|(_, grant)| {
            grant.spec.from.iter().any(|f| {
                f.group == from.group && f.kind == from.kind && f.namespace == from.namespace
            }) && grant.spec.to.iter().any(|t| {
                t.group == to.group
                    && t.kind == to.kind
                    && t.name.as_deref().is_none_or(|n| n.is_empty() || n == to.name)
            })
        })
}
