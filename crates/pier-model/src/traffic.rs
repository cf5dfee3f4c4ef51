//! A service's traffic: percentages over revisions (or LATEST) summing to 100, plus tags with their own URLs.
//!
//! The rules for `update-traffic` follow gcloud's: assignments that sum to less than 100 leave the rest to the
//! revisions already serving, in proportion to what they had.

use std::fmt;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::error::SpecError;
use crate::names::{RevisionName, Tag};

/// One entry of a service's traffic list, in Knative's shape.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TrafficTarget {
    /// A fixed revision; absent when `latestRevision` is true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision_name: Option<RevisionName>,
    /// Follow the latest ready revision.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub latest_revision: bool,
    /// Share of the service's default URL, 0 to 100.
    #[serde(default)]
    pub percent: u8,
    /// A tag that gives this target its own URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<Tag>,
}

/// What a traffic target points at: the latest ready revision or a fixed one.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum TrafficKey {
    /// The latest ready revision, re-resolved on every deploy.
    Latest,
    /// A fixed revision.
    Revision(RevisionName),
}

impl fmt::Display for TrafficKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TrafficKey::Latest => f.write_str("LATEST"),
            TrafficKey::Revision(r) => f.write_str(r.as_str()),
        }
    }
}

impl std::str::FromStr for TrafficKey {
    type Err = SpecError;
    fn from_str(s: &str) -> Result<Self, SpecError> {
        if s == "LATEST" {
            Ok(TrafficKey::Latest)
        } else {
            Ok(TrafficKey::Revision(s.parse()?))
        }
    }
}

impl TrafficTarget {
    /// The key this target points at.
    pub fn key(&self) -> TrafficKey {
        match &self.revision_name {
            Some(r) if !self.latest_revision => TrafficKey::Revision(r.clone()),
            _ => TrafficKey::Latest,
        }
    }

    fn from_key(key: &TrafficKey, percent: u8, tag: Option<Tag>) -> Self {
        match key {
            TrafficKey::Latest => Self {
                revision_name: None,
                latest_revision: true,
                percent,
                tag,
            },
            TrafficKey::Revision(r) => Self {
                revision_name: Some(r.clone()),
                latest_revision: false,
                percent,
                tag,
            },
        }
    }
}

/// A validated traffic list.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(transparent)]
pub struct Traffic(pub Vec<TrafficTarget>);

impl Default for Traffic {
    /// All traffic to the latest ready revision: what a new service gets.
    fn default() -> Self {
        Traffic(vec![TrafficTarget::from_key(
            &TrafficKey::Latest,
            100,
            None,
        )])
    }
}

impl Traffic {
    /// Checks the list: every target names exactly one of revision or LATEST, percentages sum to 100,
    /// tags are unique.
    pub fn validate(&self) -> Result<(), SpecError> {
        let mut sum: u32 = 0;
        let mut tags = std::collections::HashSet::new();
        for t in &self.0 {
            if t.latest_revision == t.revision_name.is_some() {
                return Err(SpecError::new(
                    "each traffic target names either a revision or LATEST, not both or neither",
                ));
            }
            if t.percent > 100 {
                return Err(SpecError::new(format!(
                    "traffic percent {} for {} is above 100",
                    t.percent,
                    t.key()
                )));
            }
            sum += u32::from(t.percent);
            if let Some(tag) = &t.tag
                && !tags.insert(tag.clone())
            {
                return Err(SpecError::new(format!(
                    "tag {tag} is used twice: a tag names exactly one revision"
                )));
            }
        }
        if sum != 100 {
            return Err(SpecError::new(format!(
                "traffic percentages add up to {sum}, not 100"
            )));
        }
        Ok(())
    }

    /// The percentage assignments, merged per key, in list order.
    pub fn percents(&self) -> Vec<(TrafficKey, u8)> {
        let mut out: Vec<(TrafficKey, u8)> = Vec::new();
        for t in self.0.iter().filter(|t| t.percent > 0) {
            let key = t.key();
            match out.iter_mut().find(|(k, _)| *k == key) {
                Some((_, p)) => *p = p.saturating_add(t.percent),
                None => out.push((key, t.percent)),
            }
        }
        out
    }

    /// The tags and what each points at.
    pub fn tags(&self) -> Vec<(Tag, TrafficKey)> {
        self.0
            .iter()
            .filter_map(|t| t.tag.clone().map(|tag| (tag, t.key())))
            .collect()
    }

    /// Builds a list from percentages and tags, attaching each tag to an entry of the same key when there
    /// is one without a tag, so the list reads as Cloud Run prints it.
    pub fn from_parts(percents: &[(TrafficKey, u8)], tags: &[(Tag, TrafficKey)]) -> Self {
        let mut targets: Vec<TrafficTarget> = percents
            .iter()
            .filter(|(_, p)| *p > 0)
            .map(|(k, p)| TrafficTarget::from_key(k, *p, None))
            .collect();
        for (tag, key) in tags {
            match targets
                .iter_mut()
                .find(|t| t.tag.is_none() && t.key() == *key)
            {
                Some(t) => t.tag = Some(tag.clone()),
                None => targets.push(TrafficTarget::from_key(key, 0, Some(tag.clone()))),
            }
        }
        Traffic(targets)
    }

    /// Applies `--to-revisions`-style assignments. When they sum to less than 100, the remainder goes to
    /// the keys already serving that were not named, in proportion to their current share.
    pub fn assign(&self, assignments: &[(TrafficKey, u8)]) -> Result<Self, SpecError> {
        let mut named: Vec<(TrafficKey, u8)> = Vec::new();
        for (k, p) in assignments {
            if *p > 100 {
                return Err(SpecError::new(format!(
                    "traffic percent {p} for {k} is above 100"
                )));
            }
            if named.iter().any(|(n, _)| n == k) {
                return Err(SpecError::new(format!(
                    "{k} is named twice in the traffic assignment"
                )));
            }
            named.push((k.clone(), *p));
        }
        let sum: u32 = named.iter().map(|(_, p)| u32::from(*p)).sum();
        if sum > 100 {
            return Err(SpecError::new(format!(
                "traffic percentages add up to {sum}, more than 100"
            )));
        }
        let mut result = named.clone();
        if sum < 100 {
            let others: Vec<(TrafficKey, u8)> = self
                .percents()
                .into_iter()
                .filter(|(k, _)| !named.iter().any(|(n, _)| n == k))
                .collect();
            if others.is_empty() {
                return Err(SpecError::new(format!(
                    "traffic percentages add up to {sum}, not 100, and no other revision serves traffic: name where the other {}% go",
                    100 - sum
                )));
            }
            let weights: Vec<u32> = others.iter().map(|(_, p)| u32::from(*p)).collect();
            let shares = largest_remainder(100 - sum, &weights);
            result.extend(others.into_iter().zip(shares).map(|((k, _), s)| (k, s)));
        }
        let out = Self::from_parts(&result, &self.tags());
        out.validate()?;
        Ok(out)
    }

    /// Sets (or moves) tags.
    pub fn set_tags(&self, updates: &[(Tag, TrafficKey)]) -> Self {
        let mut tags: Vec<(Tag, TrafficKey)> = self
            .tags()
            .into_iter()
            .filter(|(t, _)| !updates.iter().any(|(u, _)| u == t))
            .collect();
        tags.extend(updates.iter().cloned());
        Self::from_parts(&self.percents(), &tags)
    }

    /// Removes the named tags; unknown tags are an error so typos do not pass silently.
    pub fn remove_tags(&self, remove: &[Tag]) -> Result<Self, SpecError> {
        let tags = self.tags();
        if let Some(missing) = remove.iter().find(|r| !tags.iter().any(|(t, _)| t == *r)) {
            return Err(SpecError::new(format!(
                "tag {missing} does not exist on this service"
            )));
        }
        let kept: Vec<_> = tags
            .into_iter()
            .filter(|(t, _)| !remove.contains(t))
            .collect();
        Ok(Self::from_parts(&self.percents(), &kept))
    }

    /// Drops every tag.
    pub fn clear_tags(&self) -> Self {
        Self::from_parts(&self.percents(), &[])
    }

    /// The fixed revisions this list names (not LATEST).
    pub fn named_revisions(&self) -> impl Iterator<Item = &RevisionName> {
        self.0
            .iter()
            .filter(|t| !t.latest_revision)
            .filter_map(|t| t.revision_name.as_ref())
    }

    /// Pins LATEST to `revision` (what `--no-traffic` does before a deploy, so the new revision gets none).
    pub fn pin_latest(&self, revision: &RevisionName) -> Self {
        let pin = |k: TrafficKey| match k {
            TrafficKey::Latest => TrafficKey::Revision(revision.clone()),
            other => other,
        };
        let percents: Vec<_> = self
            .percents()
            .into_iter()
            .map(|(k, p)| (pin(k), p))
            .collect();
        let tags: Vec<_> = self.tags().into_iter().map(|(t, k)| (t, pin(k))).collect();
        Self::from_parts(&percents, &tags)
    }
}

/// Splits `total` in proportion to `weights` with whole numbers that add up to exactly `total`
/// (largest remainder method).
fn largest_remainder(total: u32, weights: &[u32]) -> Vec<u8> {
    let wsum: u32 = weights.iter().sum();
    if wsum == 0 {
        return vec![0; weights.len()];
    }
    let mut shares: Vec<(usize, u32, u32)> = weights
        .iter()
        .enumerate()
        .map(|(i, w)| (i, total * w / wsum, total * w % wsum))
        .collect();
    let given: u32 = shares.iter().map(|s| s.1).sum();
    let mut order: Vec<usize> = (0..shares.len()).collect();
    order.sort_by(|a, b| shares[*b].2.cmp(&shares[*a].2).then(a.cmp(b)));
    for i in order.into_iter().take((total - given) as usize) {
        shares[i].1 += 1;
    }
    shares.into_iter().map(|s| s.1 as u8).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rev(s: &str) -> TrafficKey {
        TrafficKey::Revision(s.parse().unwrap())
    }

    #[test]
    fn default_is_all_to_latest() {
        let t = Traffic::default();
        t.validate().unwrap();
        assert_eq!(t.percents(), vec![(TrafficKey::Latest, 100)]);
    }

    #[test]
    fn assignments_summing_to_100_replace() {
        let t = Traffic::default()
            .assign(&[(rev("a-00001-abc"), 90), (TrafficKey::Latest, 10)])
            .unwrap();
        assert_eq!(
            t.percents(),
            vec![(rev("a-00001-abc"), 90), (TrafficKey::Latest, 10)]
        );
    }

    #[test]
    fn remainder_goes_to_current_targets_in_proportion() {
        let t = Traffic::from_parts(&[(rev("a-00001-abc"), 60), (rev("a-00002-abc"), 40)], &[]);
        let t2 = t.assign(&[(rev("a-00003-abc"), 50)]).unwrap();
        assert_eq!(
            t2.percents(),
            vec![
                (rev("a-00003-abc"), 50),
                (rev("a-00001-abc"), 30),
                (rev("a-00002-abc"), 20)
            ]
        );
        // Odd splits still add up to exactly 100.
        let t3 = Traffic::from_parts(
            &[
                (rev("a-00001-abc"), 34),
                (rev("a-00002-abc"), 33),
                (rev("a-00003-abc"), 33),
            ],
            &[],
        );
        let t4 = t3.assign(&[(TrafficKey::Latest, 1)]).unwrap();
        let sum: u32 = t4.percents().iter().map(|(_, p)| u32::from(*p)).sum();
        assert_eq!(sum, 100);
    }

    #[test]
    fn bad_assignments_are_refused() {
        let t = Traffic::default();
        let err = t.assign(&[(rev("a-00001-abc"), 60), (TrafficKey::Latest, 60)]);
        assert!(err.unwrap_err().to_string().contains("more than 100"));
        let err = t.assign(&[(TrafficKey::Latest, 50)]).unwrap_err();
        assert!(
            err.to_string().contains("name where the other 50% go"),
            "{err}"
        );
        let err = t
            .assign(&[(TrafficKey::Latest, 50), (TrafficKey::Latest, 50)])
            .unwrap_err();
        assert!(err.to_string().contains("named twice"));
    }

    #[test]
    fn tags_survive_reassignment_and_can_sit_at_zero() {
        let t = Traffic::default().set_tags(&[("green".parse().unwrap(), rev("a-00002-abc"))]);
        t.validate().unwrap();
        assert_eq!(t.0.len(), 2);
        assert_eq!(t.0[1].percent, 0);
        let t2 = t.assign(&[(rev("a-00002-abc"), 100)]).unwrap();
        // The tag now rides on the serving entry.
        assert_eq!(t2.0.len(), 1);
        assert_eq!(t2.0[0].tag.as_ref().unwrap().as_str(), "green");
        let t3 = t2.remove_tags(&["green".parse().unwrap()]).unwrap();
        assert!(t3.tags().is_empty());
        assert!(t3.remove_tags(&["blue".parse().unwrap()]).is_err());
    }

    #[test]
    fn pinning_latest_keeps_shares() {
        let t = Traffic::default().pin_latest(&"a-00001-abc".parse().unwrap());
        assert_eq!(t.percents(), vec![(rev("a-00001-abc"), 100)]);
    }

    #[test]
    fn validation_catches_bad_lists() {
        let mut t = Traffic::default();
        t.0[0].percent = 50;
        assert!(t.validate().is_err());
        let both = Traffic(vec![TrafficTarget {
            revision_name: Some("a-00001-abc".parse().unwrap()),
            latest_revision: true,
            percent: 100,
            tag: None,
        }]);
        assert!(both.validate().is_err());
    }
}
