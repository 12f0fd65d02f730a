use super::*;

#[test]
fn endpoints() {
    let cases: &[(&str, Option<u16>, &str)] = &[
        ("http://127.0.0.1", Some(9000), "http://127.0.0.1:9000"),
        ("http://127.0.0.1:9000", None, "http://127.0.0.1:9000"),
        ("minio.local", None, "https://minio.local:443"),
        (
            "HTTPS://minio.local/",
            Some(8443),
            "https://minio.local:8443",
        ),
        ("http://[::1]", Some(9000), "http://[::1]:9000"),
        ("::1", None, "https://[::1]:443"),
        ("http://s3.local", None, "http://s3.local:80"),
    ];
    for (text, port, want) in cases {
        let ep = Endpoint::parse(text, *port, "host").unwrap();
        assert_eq!(ep.url(), *want, "{text}");
    }
    for bad in ["http://", "http://host/path", "http://host:99999", "[::1"] {
        assert!(Endpoint::parse(bad, None, "host").is_err(), "{bad}");
    }
}

fn conn(extra: Option<&str>) -> Connection {
    Connection {
        conn_id: broked_core::ConnId::new("s3").unwrap(),
        conn_type: ConnType::S3,
        host: None,
        port: None,
        schema: Some("bucket".into()),
        login: Some("AKID".into()),
        password: Some(Secret::new("secret-value")),
        extra: extra.map(Secret::new),
        description: None,
    }
}

#[test]
fn params_defaults_and_extra() {
    let p = Params::from_connection(&conn(None)).unwrap();
    assert_eq!(p.region, DEFAULT_REGION);
    assert!(p.endpoint.is_none());
    assert!(!p.path_style, "AWS defaults to virtual-hosted style");

    let mut c = conn(Some(r#"{"region":"eu-west-1"}"#));
    c.host = Some("http://127.0.0.1".into());
    c.port = Some(9000);
    let p = Params::from_connection(&c).unwrap();
    assert_eq!(p.region, "eu-west-1");
    assert!(p.path_style, "custom endpoints default to path style");
    assert_eq!(p.target(), "http://127.0.0.1:9000");

    let p = Params::from_connection(&conn(Some(
        r#"{"endpoint_url":"http://localhost:9000","path_style":false}"#,
    )))
    .unwrap();
    assert_eq!(p.endpoint.unwrap().url(), "http://localhost:9000");
    assert!(!p.path_style);
}

#[test]
fn missing_fields_are_config_errors() {
    let mut c = conn(None);
    c.login = None;
    assert_eq!(
        Params::from_connection(&c).err().unwrap().kind,
        Failure::Config
    );
    let mut c = conn(None);
    c.password = None;
    let e = Params::from_connection(&c).err().unwrap();
    assert!(e.message.contains("secret access key"), "{e:?}");
    let mut c = conn(None);
    c.schema = None;
    let e = Params::from_connection(&c).err().unwrap();
    assert!(e.message.contains("bucket"), "{e:?}");
    let e = Params::from_connection(&conn(Some(r#"{"region":"x/../y"}"#)))
        .err()
        .unwrap();
    assert_eq!(e.kind, Failure::Config);
    assert!(!e.message.contains("x/../y"));
}

/// Names the SDK asks for beyond the endpoint (AWS's virtual-hosted bucket names) go through
/// the same policy: here `localhost` resolves to a denied loopback address.
#[tokio::test]
async fn resolver_applies_the_policy_to_other_names() {
    let deny = ["127.0.0.0/8".to_owned(), "::1/128".to_owned()];
    let policy = Policy::new(Duration::from_secs(5), false, &deny).unwrap();
    let resolver = PolicyResolver {
        policy,
        known: Arc::new(HashMap::from([(
            "endpoint.test".to_owned(),
            vec!["127.0.0.1".parse().unwrap()],
        )])),
        failure: Arc::default(),
    };
    // The endpoint's addresses were checked by Context::resolve already.
    assert_eq!(
        resolver.resolve_dns("Endpoint.Test.").await.unwrap().len(),
        1
    );
    assert!(resolver.resolve_dns("localhost").await.is_err());
    assert_eq!(resolver.take_failure().unwrap().kind, Failure::Blocked);
}
