"""Operators' bearer tokens from an IdP, verified against a test issuer's keys served on loopback: a valid
token of each role is that operator; every forged, stale or misdirected one is refused with the reason;
Okta- and Entra-shaped tokens both name the person and the role."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import AsyncIterator
from typing import Any

import jwt
import pytest
from aiohttp.test_utils import make_mocked_request

from responder.config import OperatorsOidc
from responder.service.oidc import OidcBearer
from responder.service.operators import NoRole, Operator, Refused, Role
from tests.support.oidc import OidcIssuer

OKTA_GROUPS = {"admin": ["responder-admins"], "approver": ["responder-approvers"], "viewer": ["soc"]}


@pytest.fixture
async def idp() -> AsyncIterator[OidcIssuer]:
    async with OidcIssuer() as issuer:
        yield issuer


@pytest.fixture
async def okta(idp: OidcIssuer) -> AsyncIterator[OidcBearer]:
    """Okta's shape: keys found by discovery, roles from the `groups` claim through a group mapping."""
    bearer = OidcBearer(
        OperatorsOidc(issuer=idp.issuer, audience=idp.audience, role_claim="groups", roles=OKTA_GROUPS)  # type: ignore[arg-type]
    )
    yield bearer
    await bearer.close()


async def _authenticate(bearer: OidcBearer, token: str) -> Operator | None:
    request = make_mocked_request("GET", "/api/decisions", headers={"Authorization": f"Bearer {token}"})
    return await bearer.authenticate(request)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _hs256(claims: dict[str, Any], secret: bytes, kid: str = "rsa-1") -> str:
    """What an attacker would send to a verifier that let the token pick HMAC: signed with the public key."""
    signing_input = (
        f"{_b64(json.dumps({'alg': 'HS256', 'typ': 'JWT', 'kid': kid}).encode())}.{_b64(json.dumps(claims).encode())}"
    )
    mac = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{_b64(mac)}"


@pytest.mark.parametrize(
    ("group", "role"),
    [("soc", Role.VIEWER), ("responder-approvers", Role.APPROVER), ("responder-admins", Role.ADMIN)],
)
async def test_a_valid_token_is_the_operator_its_email_names_with_the_role_its_group_maps_to(
    idp: OidcIssuer, okta: OidcBearer, group: str, role: Role
) -> None:
    token = idp.mint(idp.claims(email="alice@example.com", groups=["Everyone", group]))
    assert await _authenticate(okta, token) == Operator("alice@example.com", role, "oidc")


async def test_the_highest_mapped_role_wins_and_an_es256_key_works_too(idp: OidcIssuer, okta: OidcBearer) -> None:
    claims = idp.claims(email="bob@example.com", groups=["soc", "responder-admins"])
    assert await _authenticate(okta, idp.mint(claims, alg="ES256", kid="ec-1")) == Operator(
        "bob@example.com", Role.ADMIN, "oidc"
    )


async def test_discovery_and_the_keys_are_fetched_once_for_many_tokens(idp: OidcIssuer, okta: OidcBearer) -> None:
    for n in range(5):
        await _authenticate(okta, idp.mint(idp.claims(email=f"u{n}@example.com", groups=["soc"])))
    assert (idp.discovery_fetches, idp.jwks_fetches) == (1, 1)


def _forgeries(idp: OidcIssuer) -> dict[str, tuple[str, str]]:
    """name → (token, what the refusal says)."""
    good = idp.claims(email="mallory@example.com", groups=["responder-admins"])
    signed = idp.mint(good)
    head, body, signature = signed.split(".")
    middle = len(signature) // 2
    tampered = signature[:middle] + ("A" if signature[middle] != "A" else "B") + signature[middle + 1 :]
    return {
        "expired": (idp.mint(good | {"iat": good["iat"] - 900, "exp": good["iat"] - 600}), "expired"),
        "wrong audience": (idp.mint(good | {"aud": "api://another-app"}), "aud"),
        "wrong issuer": (idp.mint(good | {"iss": "https://evil.example/oauth2/default"}), "iss"),
        "unknown kid": (idp.mint(good, key=idp.stranger, kid="rsa-2"), "no signing key"),
        "known kid, other key": (idp.mint(good, key=idp.stranger, kid="rsa-1"), "signature"),
        "alg none": (jwt.encode(good, None, algorithm="none", headers={"kid": "rsa-1"}), "algorithm 'none'"),
        "HS256 with the public key": (_hs256(good, idp.public_pem()), "algorithm 'HS256'"),
        "tampered signature": (f"{head}.{body}.{tampered}", "signature"),
        "tampered claims": (f"{head}.{_b64(json.dumps(good | {'groups': ['x']}).encode())}.{signature}", "signature"),
        "no exp": (idp.mint({k: v for k, v in good.items() if k != "exp"}), "exp"),
        "not yet valid": (idp.mint(good | {"nbf": good["iat"] + 600}), "not valid yet"),
        "RS256 header on the EC key": (idp.mint(good, key=idp.rsa, kid="ec-1"), "not a RS256 key"),
    }


FORGERIES = [
    "expired", "wrong audience", "wrong issuer", "unknown kid", "known kid, other key", "alg none",
    "HS256 with the public key", "tampered signature", "tampered claims", "no exp", "not yet valid",
    "RS256 header on the EC key",
]  # fmt: skip


@pytest.mark.parametrize("forgery", FORGERIES)
async def test_a_token_that_does_not_verify_is_refused_with_the_reason(
    idp: OidcIssuer, okta: OidcBearer, forgery: str
) -> None:
    token, reason = _forgeries(idp)[forgery]
    with pytest.raises(Refused) as refused:
        await _authenticate(okta, token)
    assert not isinstance(refused.value, NoRole)
    assert reason in str(refused.value)


async def test_a_valid_token_without_a_mapped_group_is_refused_naming_the_claim(
    idp: OidcIssuer, okta: OidcBearer
) -> None:
    with pytest.raises(NoRole, match="'groups' claim") as refused:
        await _authenticate(okta, idp.mint(idp.claims(email="carol@example.com", groups=["Everyone"])))
    assert "carol@example.com has no role here" in str(refused.value)
    with pytest.raises(NoRole, match=r"\(absent\)"):
        await _authenticate(okta, idp.mint(idp.claims(email="carol@example.com")))


async def test_a_credential_that_is_not_a_jwt_is_left_to_the_other_authenticators(okta: OidcBearer) -> None:
    assert await _authenticate(okta, "rsp_abcdef") is None
    assert await _authenticate(okta, "the-shared-admin-token") is None


async def test_an_okta_access_token_names_the_person_by_sub_and_maps_its_groups(
    idp: OidcIssuer, okta: OidcBearer
) -> None:
    # The shape of an Okta custom authorization server's access token (ver 1): the login in `sub`, no
    # `email`, groups where the authorization server's "groups" claim puts them.
    claims = idp.claims(
        ver=1, jti="AT.x1", cid="0oa1clientid", uid="00u1alice", scp=["openid", "profile"],
        sub="alice@example.com", groups=["Everyone", "responder-approvers"],
    )  # fmt: skip
    assert idp.issuer.endswith("/oauth2/default")
    assert await _authenticate(okta, idp.mint(claims)) == Operator("alice@example.com", Role.APPROVER, "oidc")


async def test_an_entra_v2_token_names_the_person_by_preferred_username_and_maps_its_app_roles(
    idp: OidcIssuer,
) -> None:
    tenant = "72f988bf-86f1-41af-91ab-2d7cd011db47"
    app_id = "6e74172b-be56-4843-9ff4-e66a39bb12e3"
    entra_issuer = f"https://login.microsoftonline.com/{tenant}/v2.0"
    bearer = OidcBearer(
        OperatorsOidc(
            issuer=entra_issuer, audience=app_id, jwks_url=idp.jwks_url,
            roles={"admin": ["Responder.Admin"], "approver": ["Responder.Approver"]},  # type: ignore[dict-item]
        )
    )  # fmt: skip
    try:
        claims = idp.claims(
            iss=entra_issuer, aud=app_id, ver="2.0", tid=tenant, oid="00000000-0000-0000-66f3-3332eca7ea81",
            azp="0b6d2a9c-0000-4b1e-8f3b-3f4e8c1d2e3f", sub="AAAAAAAAAAAAAAAAAAAAAIkzqFVrSaSaFHy782bbtaQ",
            preferred_username="dana@contoso.com", name="Dana", roles=["Responder.Approver"],
        )  # fmt: skip
        assert await _authenticate(bearer, idp.mint(claims)) == Operator("dana@contoso.com", Role.APPROVER, "oidc")
        with pytest.raises(Refused, match="iss"):
            await _authenticate(bearer, idp.mint(claims | {"iss": f"https://sts.windows.net/{tenant}/"}))
    finally:
        await bearer.close()


async def test_the_role_names_themselves_grant_roles_when_no_mapping_is_configured(idp: OidcIssuer) -> None:
    bearer = OidcBearer(OperatorsOidc(issuer=idp.issuer, audience=idp.audience))
    try:
        token = idp.mint(idp.claims(email="erin@example.com", roles=["viewer", "approver"]))
        assert await _authenticate(bearer, token) == Operator("erin@example.com", Role.APPROVER, "oidc")
    finally:
        await bearer.close()


async def test_an_unreachable_discovery_document_is_refused_and_not_asked_again_at_once() -> None:
    bearer = OidcBearer(OperatorsOidc(issuer="http://127.0.0.1:9/oauth2/default", audience="a", jwks_timeout_s=1))
    async with OidcIssuer() as idp:
        token = idp.mint(idp.claims(email="x@example.com", roles=["viewer"]))
    try:
        for _ in range(2):
            with pytest.raises(Refused, match="discovery document"):
                await _authenticate(bearer, token)
    finally:
        await bearer.close()


async def test_made_up_key_ids_cost_one_key_fetch_a_minute_not_one_each(idp: OidcIssuer, okta: OidcBearer) -> None:
    await _authenticate(okta, idp.mint(idp.claims(email="a@example.com", groups=["soc"])))
    for n in range(20):
        with pytest.raises(Refused, match="no signing key"):
            await _authenticate(okta, idp.mint(idp.claims(), key=idp.stranger, kid=f"made-up-{n}"))
    assert idp.jwks_fetches == 1  # the first; every unknown kid within the minute is refused from memory
