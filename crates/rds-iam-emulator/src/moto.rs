//! Temporary credentials issued by a local moto server's STS. RDS accepts tokens signed with credentials that AWS
//! STS issued; the emulator accepts those moto issued, when told where moto is, so that role assumption can be tested
//! end to end without AWS.

use serde::Deserialize;
use url::Url;

use crate::sigv4::Verifier;

/// The part of moto's `/moto-api/data.json` that lists STS's issued credentials.
#[derive(Debug, Deserialize)]
struct State {
    #[serde(default)]
    sts: Sts,
}

#[derive(Debug, Default, Deserialize)]
struct Sts {
    #[serde(rename = "AssumedRole", default)]
    assumed_roles: Vec<Issued>,
}

#[derive(Deserialize)]
struct Issued {
    access_key_id: String,
    secret_access_key: String,
    session_token: String,
}

impl std::fmt::Debug for Issued {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Issued")
            .field("access_key_id", &self.access_key_id)
            .finish_non_exhaustive()
    }
}

/// Where moto runs, and a client to ask it with.
#[derive(Debug)]
pub(crate) struct MotoSts {
    state_url: Url,
    client: reqwest::Client,
}

impl MotoSts {
    pub(crate) fn new(moto: &Url) -> Result<Self, url::ParseError> {
        Ok(Self {
            state_url: moto.join("/moto-api/data.json")?,
            client: reqwest::Client::new(),
        })
    }

    /// Teaches `verifier` every set of credentials moto's STS has issued so far; returns how many there are.
    pub(crate) async fn learn_issued_credentials(&self, verifier: &Verifier) -> Result<usize, reqwest::Error> {
        let state: State = self
            .client
            .get(self.state_url.clone())
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        let count = state.sts.assumed_roles.len();
        for issued in state.sts.assumed_roles {
            verifier.learn(
                issued.access_key_id,
                issued.secret_access_key,
                Some(issued.session_token),
            );
        }
        Ok(count)
    }
}
