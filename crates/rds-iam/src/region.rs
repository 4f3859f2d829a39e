//! The AWS region an RDS or Aurora DSQL endpoint lives in, read from its host name.

/// The AWS region in an RDS endpoint name (`db.cluster-abc.eu-west-1.rds.amazonaws.com`,
/// `db.proxy-abc.us-east-1.rds.amazonaws.com`, `db.abc.cn-north-1.rds.amazonaws.com.cn`) or an Aurora DSQL one
/// (`kaabtu3ivgyiv7yeqqqzxcvfne.dsql.us-east-1.on.aws`).
///
/// ```
/// assert_eq!(rds_iam::region_from_host("tasks.cluster-abc.eu-west-1.rds.amazonaws.com"), Some("eu-west-1"));
/// assert_eq!(rds_iam::region_from_host("kaabtu3ivgyiv7yeqqqzxcvfne.dsql.us-east-2.on.aws"), Some("us-east-2"));
/// assert_eq!(rds_iam::region_from_host("localhost"), None);
/// ```
#[must_use]
pub fn region_from_host(host: &str) -> Option<&str> {
    let labels: Vec<&str> = host.trim_end_matches('.').split('.').collect();
    let looks_like_region = |region: &str| region.contains('-') && region.ends_with(|c: char| c.is_ascii_digit());
    // RDS: a region label right before `rds.amazonaws`, with at least one label before it.
    if let Some(rds) = labels
        .windows(2)
        .position(|pair| pair[0].eq_ignore_ascii_case("rds") && pair[1].eq_ignore_ascii_case("amazonaws"))
    {
        let region = *labels.get(rds.checked_sub(1)?)?;
        return (rds >= 2 && looks_like_region(region)).then_some(region);
    }
    // DSQL: exactly CLUSTER.dsql.REGION.on.aws.
    match labels.as_slice() {
        [cluster, dsql, region, on, aws]
            if !cluster.is_empty()
                && dsql.eq_ignore_ascii_case("dsql")
                && on.eq_ignore_ascii_case("on")
                && aws.eq_ignore_ascii_case("aws")
                && looks_like_region(region) =>
        {
            Some(region)
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regions_are_read_from_rds_host_names() {
        let cases = [
            (
                "tasks.cluster-c9di9qmu8xqw.eu-west-1.rds.amazonaws.com",
                Some("eu-west-1"),
            ),
            (
                "tasks.cluster-ro-c9di9qmu8xqw.us-east-2.rds.amazonaws.com",
                Some("us-east-2"),
            ),
            (
                "instance-1.c9di9qmu8xqw.ap-southeast-2.rds.amazonaws.com",
                Some("ap-southeast-2"),
            ),
            (
                "tasks-proxy.proxy-c9di9qmu8xqw.us-west-2.rds.amazonaws.com",
                Some("us-west-2"),
            ),
            ("db.c9di9qmu8xqw.cn-north-1.rds.amazonaws.com.cn", Some("cn-north-1")),
            ("db.c9di9qmu8xqw.us-gov-west-1.rds.amazonaws.com", Some("us-gov-west-1")),
            ("localhost", None),
            ("127.0.0.1", None),
            ("rds.amazonaws.com", None),
            ("db.example.com", None),
            ("kaabtu3ivgyiv7yeqqqzxcvfne.dsql.us-east-1.on.aws", Some("us-east-1")),
            ("iqabtu3jw4ggbhnqmbynnnebve.dsql.eu-west-3.on.aws.", Some("eu-west-3")),
            ("dsql.us-east-1.on.aws", None),
            ("x.dsql.global.on.aws", None),
            ("x.y.dsql.us-east-1.on.aws", None),
            ("x.lambda.us-east-1.on.aws", None),
        ];
        for (host, region) in cases {
            assert_eq!(region_from_host(host), region, "{host}");
        }
    }
}
