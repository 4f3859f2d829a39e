//! The AWS region an RDS endpoint lives in, read from its host name.

/// The AWS region in an RDS endpoint name: `db.cluster-abc.eu-west-1.rds.amazonaws.com`,
/// `db.proxy-abc.us-east-1.rds.amazonaws.com`, `db.abc.cn-north-1.rds.amazonaws.com.cn`.
///
/// ```
/// assert_eq!(rds_iam::region_from_host("tasks.cluster-abc.eu-west-1.rds.amazonaws.com"), Some("eu-west-1"));
/// assert_eq!(rds_iam::region_from_host("localhost"), None);
/// ```
#[must_use]
pub fn region_from_host(host: &str) -> Option<&str> {
    let labels: Vec<&str> = host.split('.').collect();
    let rds = labels
        .windows(2)
        .position(|pair| pair[0].eq_ignore_ascii_case("rds") && pair[1].eq_ignore_ascii_case("amazonaws"))?;
    let region = *labels.get(rds.checked_sub(1)?)?;
    let looks_like_region = region.contains('-') && region.ends_with(|c: char| c.is_ascii_digit());
    (rds >= 2 && looks_like_region).then_some(region)
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
        ];
        for (host, region) in cases {
            assert_eq!(region_from_host(host), region, "{host}");
        }
    }
}
