use super::*;

fn load(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
    Config::from_vars(vars.iter().map(|(k, v)| (k.to_string(), v.to_string())))
}

#[test]
fn defaults_match_the_design_table() {
    let c = load(&[]).unwrap();
    assert!(matches!(&c.redis, RedisTarget::Single(u) if u.expose() == "redis://127.0.0.1:6379"));
    assert_eq!(c.prefix, "ferry");
    assert_eq!(c.listen.to_string(), "127.0.0.1:5000");
    assert_eq!(c.worker_admin_listen, None);
    assert!(c.providers.is_empty());
    assert_eq!(c.wechat.api_base, "https://api.weixin.qq.com");
    assert_eq!(c.log.level, "INFO");
    assert_eq!(c.log.format, None);
    assert_eq!(c.alerts.error_rate, 0.05);
    assert_eq!(c.alerts.response_time, Duration::from_secs(5));
    assert_eq!(c.alerts.requests_per_minute, 100);
}

#[test]
fn ai_settings_have_defaults_and_are_read_from_the_environment() {
    let d = load(&[]).unwrap().ai;
    assert_eq!(d.connect_timeout, Duration::from_secs(5));
    assert_eq!(d.request_timeout, Duration::from_secs(60));
    assert_eq!(d.extra_ca_file, None);
    assert_eq!(d.attempts_per_provider, 3);
    assert_eq!(d.total_budget, Duration::from_secs(120));
    assert_eq!(
        (d.memory_turns, d.memory_ttl, d.max_prompt_chars),
        (10, Duration::from_secs(86_400), 12_000)
    );
    let c = load(&[
        ("FERRY_PROVIDER_CONNECT_TIMEOUT", "1.5"),
        ("FERRY_PROVIDER_TIMEOUT", "20"),
        ("FERRY_EXTRA_CA_FILE", "/etc/ferry/gateway-ca.pem"),
        ("FERRY_PROVIDER_ATTEMPTS", "2"),
        ("FERRY_AI_TOTAL_BUDGET", "45"),
        ("FERRY_MEMORY_TURNS", "0"),
        ("FERRY_MEMORY_TTL", "600"),
        ("FERRY_MAX_PROMPT_CHARS", "4000"),
    ])
    .unwrap()
    .ai;
    assert_eq!(c.connect_timeout, Duration::from_millis(1500));
    assert_eq!(c.request_timeout, Duration::from_secs(20));
    assert_eq!(
        c.extra_ca_file.as_deref(),
        Some(std::path::Path::new("/etc/ferry/gateway-ca.pem"))
    );
    assert_eq!(c.attempts_per_provider, 2);
    assert_eq!(c.total_budget, Duration::from_secs(45));
    assert_eq!(
        (c.memory_turns, c.memory_ttl, c.max_prompt_chars),
        (0, Duration::from_secs(600), 4000)
    );
    for var in [
        "FERRY_PROVIDER_CONNECT_TIMEOUT",
        "FERRY_PROVIDER_TIMEOUT",
        "FERRY_PROVIDER_ATTEMPTS",
        "FERRY_AI_TOTAL_BUDGET",
        "FERRY_MEMORY_TTL",
        "FERRY_MAX_PROMPT_CHARS",
    ] {
        assert_eq!(load(&[(var, "0")]).unwrap_err().var, var);
    }
    assert_eq!(
        load(&[("FERRY_MEMORY_TURNS", "-1")]).unwrap_err().var,
        "FERRY_MEMORY_TURNS"
    );
}

#[test]
fn providers_default_to_every_one_with_a_key_in_order() {
    let c = load(&[
        ("QWEN_API_KEY", "q"),
        ("DEEPSEEK_API_KEY", "d"),
        ("OPENAI_API_KEY", "o"),
    ])
    .unwrap();
    let names: Vec<_> = c.providers.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["deepseek", "qwen", "chatgpt"]);
    assert_eq!(c.providers[2].api_key.as_ref().unwrap().expose(), "o");
}

#[test]
fn explicit_chain_with_overrides() {
    let c = load(&[
        ("FERRY_PROVIDERS", "qwen, deepseek"),
        ("QWEN_API_KEY", "q"),
        ("DEEPSEEK_API_KEY", "d"),
        ("DEEPSEEK_BASE_URL", "http://127.0.0.1:9/v1/"),
        ("DEEPSEEK_MODEL", "deepseek-reasoner"),
    ])
    .unwrap();
    assert_eq!(c.providers[0].name, "qwen");
    assert_eq!(c.providers[1].base_url, "http://127.0.0.1:9/v1");
    assert_eq!(c.providers[1].model, "deepseek-reasoner");
}

#[test]
fn vision_models_have_defaults_are_configurable_and_an_empty_value_turns_them_off() {
    let keys = [
        ("DEEPSEEK_API_KEY", "k"),
        ("QWEN_API_KEY", "k"),
        ("OPENAI_API_KEY", "k"),
        ("GEMINI_API_KEY", "k"),
        ("ZHIPU_API_KEY", "k"),
        ("DOUBAO_API_KEY", "k"),
        ("DOUBAO_MODEL", "ep-text"),
    ];
    let vision = |c: &Config| -> Vec<(String, Option<String>)> {
        c.providers
            .iter()
            .map(|p| (p.name.clone(), p.vision_model.clone()))
            .collect()
    };
    let named = |pairs: &[(&str, Option<&str>)]| -> Vec<(String, Option<String>)> {
        pairs
            .iter()
            .map(|(n, m)| (n.to_string(), m.map(str::to_owned)))
            .collect()
    };
    let c = load(&keys).unwrap();
    assert_eq!(
        vision(&c),
        named(&[
            ("deepseek", None),
            ("qwen", Some("qwen-vl-max")),
            ("chatgpt", Some("gpt-4o-mini")),
            ("gemini", Some("gemini-2.0-flash")),
            ("zhipu", Some("glm-4v-flash")),
            ("doubao", None),
        ])
    );
    assert_eq!(ProviderConfig::echo().vision_model, None);

    let mut vars = keys.to_vec();
    vars.extend([
        ("DOUBAO_VISION_MODEL", "ep-vision"),
        ("QWEN_VISION_MODEL", " qwen-vl-plus "),
        ("GEMINI_VISION_MODEL", ""),
    ]);
    let c = load(&vars).unwrap();
    let by_name = |name: &str| {
        let p = c.providers.iter().find(|p| p.name == name).unwrap();
        p.vision_model.clone()
    };
    assert_eq!(by_name("doubao").as_deref(), Some("ep-vision"));
    assert_eq!(by_name("qwen").as_deref(), Some("qwen-vl-plus"));
    assert_eq!(by_name("gemini"), None, "an empty value turns pictures off");

    let dir = tempfile_dir();
    let path = dir.join("vision.toml");
    std::fs::write(
        &path,
        "[providers.local]\nbase_url = \"http://127.0.0.1:8000/v1\"\nmodel = \"llama\"\nvision_model = \"llava\"\n[providers.zhipu]\nvision_model = \"\"\n",
    )
    .unwrap();
    let p = path.to_str().unwrap();
    let c = load(&[
        ("FERRY_CONFIG", p),
        ("FERRY_PROVIDERS", "local,zhipu"),
        ("LOCAL_API_KEY", "x"),
        ("ZHIPU_API_KEY", "z"),
    ])
    .unwrap();
    assert_eq!(
        vision(&c),
        named(&[("local", Some("llava")), ("zhipu", None)])
    );
    let c = load(&[
        ("FERRY_CONFIG", p),
        ("FERRY_PROVIDERS", "local"),
        ("LOCAL_API_KEY", "x"),
        ("LOCAL_VISION_MODEL", "llava-13b"),
    ])
    .unwrap();
    assert_eq!(c.providers[0].vision_model.as_deref(), Some("llava-13b"));
    assert!(vars::is_known("QWEN_VISION_MODEL"));
}

#[test]
fn gate_settings_come_from_the_environment_over_the_file() {
    let dir = tempfile_dir();
    let path = dir.join("gates.toml");
    std::fs::write(
        &path,
        "[providers.qwen]\nrequests_per_minute = 600\nmax_concurrency = 8\nbreaker_open_for = 5\n",
    )
    .unwrap();
    let c = load(&[
        ("FERRY_CONFIG", path.to_str().unwrap()),
        ("QWEN_API_KEY", "q"),
        ("QWEN_RPM", "120"),
        ("QWEN_BREAKER_MIN_CALLS", "3"),
    ])
    .unwrap();
    let g = c.gate("qwen");
    assert_eq!(g.requests_per_minute, 120);
    assert_eq!(g.burst, 6);
    assert_eq!(g.max_concurrency, 8);
    assert_eq!(g.breaker.minimum_calls, 3);
    assert_eq!(g.breaker.open_for, Duration::from_secs(5));
    assert_eq!(
        load(&[("QWEN_API_KEY", "q"), ("QWEN_RPM", "many")])
            .unwrap_err()
            .var,
        "QWEN_RPM"
    );
    assert_eq!(
        load(&[("QWEN_API_KEY", "q"), ("QWEN_BREAKER_FAILURE_RATE", "2")])
            .unwrap_err()
            .var,
        "QWEN_BREAKER_FAILURE_RATE"
    );
}

#[test]
fn bad_values_name_the_variable() {
    let cases: &[(&[(&str, &str)], &str)] = &[
        (&[("FERRY_LISTEN", "nowhere")], "FERRY_LISTEN"),
        (
            &[("FERRY_WORKER_ADMIN_LISTEN", ":9090")],
            "FERRY_WORKER_ADMIN_LISTEN",
        ),
        (&[("REDIS_URL", "http://x")], "REDIS_URL"),
        (&[("LOG_FORMAT", "xml")], "LOG_FORMAT"),
        (&[("LOG_LEVEL", "loud")], "LOG_LEVEL"),
        (
            &[("API_ERROR_RATE_THRESHOLD", "5")],
            "API_ERROR_RATE_THRESHOLD",
        ),
        (&[("RATE_LIMIT_THRESHOLD", "-1")], "RATE_LIMIT_THRESHOLD"),
        (&[("FERRY_PROVIDERS", "nosuch")], "FERRY_PROVIDERS"),
        (&[("FERRY_PROVIDERS", "qwen")], "QWEN_API_KEY"),
        (&[("DOUBAO_API_KEY", "k")], "DOUBAO_MODEL"),
        (
            &[("WECHAT_ENCODING_AES_KEY", "short")],
            "WECHAT_ENCODING_AES_KEY",
        ),
        (
            &[("FERRY_WORKER_CONCURRENCY", "0")],
            "FERRY_WORKER_CONCURRENCY",
        ),
    ];
    for (vars, expected) in cases {
        let err = load(vars).unwrap_err();
        assert_eq!(err.var, *expected, "{err}");
        assert!(err.to_string().starts_with(expected));
    }
}

#[test]
fn secret_values_never_appear_in_errors_or_debug() {
    let c = load(&[
        ("DEEPSEEK_API_KEY", "sk-very-secret"),
        ("REDIS_URL", "redis://:hunter2@h:1"),
    ])
    .unwrap();
    let dbg = format!("{c:?}");
    assert!(!dbg.contains("sk-very-secret") && !dbg.contains("hunter2"));
    assert_eq!(c.redis_redacted(), "redis://:***@h:1");
    let err = load(&[("WECHAT_ENCODING_AES_KEY", "leakme")]).unwrap_err();
    assert!(!err.to_string().contains("leakme"));
}

#[test]
fn file_values_are_overridden_by_the_environment() {
    let dir = tempfile_dir();
    let path = dir.join("ferry.toml");
    std::fs::write(
        &path,
        "ferry_prefix = \"fromfile\"\nlog_level = \"debug\"\n[providers.local]\nbase_url = \"http://127.0.0.1:8000/v1\"\nmodel = \"llama\"\ntemperature = 0.2\n",
    )
    .unwrap();
    let p = path.to_str().unwrap();
    let c = load(&[
        ("FERRY_CONFIG", p),
        ("LOG_LEVEL", "warn"),
        ("LOCAL_API_KEY", "x"),
    ])
    .unwrap();
    assert_eq!(c.prefix, "fromfile");
    assert_eq!(c.log.level, "warn");
    assert_eq!(c.providers.len(), 1);
    assert_eq!(c.providers[0].name, "local");
    assert_eq!(c.providers[0].temperature, Some(0.2));
    let c = load(&[
        ("FERRY_CONFIG", p),
        ("LOCAL_API_KEY", "x"),
        ("LOCAL_TEMPERATURE", "0.9"),
        ("LOCAL_MAX_TOKENS", "64"),
    ])
    .unwrap();
    assert_eq!(c.providers[0].temperature, Some(0.9));
    assert_eq!(c.providers[0].max_tokens, Some(64));
    let err = load(&[("FERRY_CONFIG", "/nonexistent/ferry.toml")]).unwrap_err();
    assert_eq!(err.var, "FERRY_CONFIG");
}

#[test]
fn reply_settings_have_defaults_and_are_read_from_the_environment() {
    let d = load(&[]).unwrap();
    assert_eq!(d.wechat.token_source, crate::fleet::TokenSource::Stable);
    assert!(d.reply.typing_indicator);
    assert_eq!(d.reply.apology, DEFAULT_APOLOGY);
    assert_eq!(
        d.reply.user_limit,
        Some(UserLimit {
            per_minute: 20,
            burst: 5
        })
    );
    assert_eq!(d.reply.user_limit_text, DEFAULT_USER_LIMIT_TEXT);
    let c = load(&[
        ("WECHAT_TOKEN_ENDPOINT", "classic"),
        ("FERRY_TYPING_INDICATOR", "off"),
        ("FERRY_APOLOGY_TEXT", "sorry"),
        ("FERRY_USER_MESSAGES_PER_MINUTE", "6"),
        ("FERRY_USER_BURST", "2"),
        ("FERRY_USER_LIMIT_TEXT", "slow down"),
    ])
    .unwrap();
    assert_eq!(c.wechat.token_source, crate::fleet::TokenSource::Classic);
    assert!(!c.reply.typing_indicator);
    assert_eq!(c.reply.apology, "sorry");
    assert_eq!(
        c.reply.user_limit,
        Some(UserLimit {
            per_minute: 6,
            burst: 2
        })
    );
    assert_eq!(c.reply.user_limit_text, "slow down");
    let off = load(&[("FERRY_USER_MESSAGES_PER_MINUTE", "0")]).unwrap();
    assert_eq!(off.reply.user_limit, None);
    for (var, value) in [
        ("WECHAT_TOKEN_ENDPOINT", "fast"),
        ("FERRY_TYPING_INDICATOR", "maybe"),
        ("FERRY_USER_MESSAGES_PER_MINUTE", "-1"),
        ("FERRY_USER_BURST", "0"),
    ] {
        let err = load(&[(var, value)]).unwrap_err();
        assert_eq!(err.var, var, "{err}");
    }
}

#[test]
fn ingress_settings_have_defaults_and_name_the_variable_at_fault() {
    let d = load(&[]).unwrap().ingress;
    assert_eq!(d.ack_budget, Duration::from_millis(1500));
    assert_eq!(d.spool_dir, PathBuf::from("ferry-spool"));
    assert_eq!(d.spool_max_bytes, 64 * 1024 * 1024);
    assert_eq!(d.max_skew, Duration::from_secs(300));
    let rate = d.ip_rate.unwrap();
    assert_eq!((rate.per_second, rate.burst), (100, 200));
    assert!(rate.allow.is_empty() && d.trusted_proxies.is_empty());
    assert!(d.welcome.contains("感谢关注"));

    let c = load(&[
        (
            "FERRY_IP_RATE_ALLOW",
            "101.226.0.0/16, 203.0.113.7 2001:db8::/32",
        ),
        ("FERRY_TRUSTED_PROXIES", "127.0.0.1"),
        ("FERRY_WECHAT_WELCOME", "welcome!"),
    ])
    .unwrap()
    .ingress;
    let allow = c.ip_rate.unwrap().allow;
    assert_eq!(allow.len(), 3);
    assert!(allow[0].contains("101.226.99.1".parse().unwrap()));
    assert!(!allow[0].contains("101.227.0.1".parse().unwrap()));
    assert!(allow[1].contains("::ffff:203.0.113.7".parse().unwrap()));
    assert!(allow[2].contains("2001:db8::1".parse().unwrap()));
    assert!(!allow[2].contains("203.0.113.7".parse().unwrap()));
    assert_eq!(c.welcome, "welcome!");
    assert!(
        load(&[("FERRY_IP_RATE_LIMIT", "off")])
            .unwrap()
            .ingress
            .ip_rate
            .is_none()
    );

    for (var, bad) in [
        ("FERRY_ACK_BUDGET_MS", "0"),
        ("FERRY_ACK_BUDGET_MS", "5000"),
        ("FERRY_IP_RATE_LIMIT", "-3"),
        ("FERRY_IP_RATE_BURST", "0"),
        ("FERRY_IP_RATE_ALLOW", "10.0.0.0/33"),
        ("FERRY_TRUSTED_PROXIES", "proxy.local"),
        ("FERRY_WECHAT_MAX_SKEW", "0"),
        ("FERRY_SPOOL_MAX_BYTES", "0"),
    ] {
        assert_eq!(load(&[(var, bad)]).unwrap_err().var, var, "{var}={bad}");
    }
}

#[test]
fn ip_ranges_match_by_prefix() {
    let all: IpRange = "0.0.0.0/0".parse().unwrap();
    assert!(all.contains("8.8.8.8".parse().unwrap()));
    assert!(!all.contains("::1".parse().unwrap()));
    let one: IpRange = "::1".parse().unwrap();
    assert!(one.contains("::1".parse().unwrap()));
    assert_eq!(one.to_string(), "::1/128");
    let mapped = "::ffff:10.0.0.0/104".parse::<IpRange>();
    assert!(mapped.is_err(), "IPv4-mapped prefixes are written as IPv4");
}

#[test]
fn every_variable_name_is_in_vars_all() {
    let source = include_str!("vars.rs");
    let module = source.split("pub const ALL").next().unwrap();
    let declared: Vec<&str> = module
        .lines()
        .filter_map(|l| l.trim().strip_prefix("pub const "))
        .filter_map(|l| l.split(':').next())
        .collect();
    assert!(declared.len() > 40);
    for name in declared {
        assert!(
            vars::ALL.contains(&name),
            "{name} is missing from vars::ALL"
        );
    }
    assert!(vars::is_known("LOCAL_API_KEY") && vars::is_known("QWEN_RPM"));
    assert!(!vars::is_known("DEEPSEK_APIKEY") && !vars::is_known("_API_KEY"));
}

#[test]
fn several_keys_per_provider_are_a_comma_separated_list() {
    let c = load(&[
        ("DEEPSEEK_API_KEY", " k1, k2 ,,k3"),
        ("OPENAI_API_KEY", "o"),
    ])
    .unwrap();
    let keys: Vec<&str> = c.provider_keys["deepseek"]
        .iter()
        .map(|k| k.expose())
        .collect();
    assert_eq!(keys, ["k1", "k2", "k3"]);
    assert_eq!(c.providers[0].api_key.as_ref().unwrap().expose(), "k1");
    assert_eq!(c.provider_keys["chatgpt"].len(), 1);
    assert!(c.secrets_file_report.is_none());
}

fn secrets_file(dir: &std::path::Path, plaintext: &str) -> String {
    let path = dir.join("secrets.enc");
    let password = Secret::new("pw");
    let params = crate::secrets_file::KdfParams::default();
    crate::secrets_file::encrypt_to_file(&path, plaintext, &password, params).unwrap();
    path.to_str().unwrap().to_owned()
}

#[test]
fn the_secrets_file_sits_between_the_environment_and_ferry_toml() {
    let dir = tempfile_dir().join("secrets-between");
    std::fs::create_dir_all(&dir).unwrap();
    let toml = dir.join("ferry.toml");
    std::fs::write(
        &toml,
        "wechat_token = \"from-toml\"\nwechat_app_id = \"wx1\"\n",
    )
    .unwrap();
    let path = secrets_file(
        &dir,
        "DEEPSEEK_API_KEY = [\"f1\", \"f2\"]\nWECHAT_TOKEN = \"from-file\"\nWECHAT_APP_SECRET = \"s-file\"\nNOT_A_FERRY_NAME = \"x\"\n",
    );
    let c = load(&[
        ("FERRY_CONFIG", toml.to_str().unwrap()),
        ("FERRY_SECRETS_FILE", &path),
        ("SECURE_CONFIG_PASSWORD", "pw"),
        ("WECHAT_APP_SECRET", "s-env"),
    ])
    .unwrap();
    let keys: Vec<&str> = c.provider_keys["deepseek"]
        .iter()
        .map(|k| k.expose())
        .collect();
    assert_eq!(keys, ["f1", "f2"]);
    assert_eq!(c.wechat.token.as_ref().unwrap().expose(), "from-file");
    assert_eq!(c.wechat.app_secret.as_ref().unwrap().expose(), "s-env");
    assert_eq!(c.wechat.app_id.as_deref(), Some("wx1"));
    let report = c.secrets_file_report.unwrap();
    assert_eq!(report.from_file, ["DEEPSEEK_API_KEY", "WECHAT_TOKEN"]);
    assert_eq!(report.overridden_by_env, ["WECHAT_APP_SECRET"]);
    assert_eq!(report.ignored, ["NOT_A_FERRY_NAME"]);
}

#[test]
fn a_secrets_file_needs_its_password_and_the_right_one() {
    let dir = tempfile_dir().join("secrets-password");
    std::fs::create_dir_all(&dir).unwrap();
    let path = secrets_file(&dir, "DEEPSEEK_API_KEY = \"sk-hidden\"\n");
    let err = load(&[("FERRY_SECRETS_FILE", &path)]).unwrap_err();
    assert_eq!(err.var, "SECURE_CONFIG_PASSWORD");
    let err = load(&[
        ("FERRY_SECRETS_FILE", &path),
        ("SECURE_CONFIG_PASSWORD", "wrong"),
    ])
    .unwrap_err();
    assert_eq!(err.var, "FERRY_SECRETS_FILE");
    assert!(err.reason.contains("password"), "{err}");
    assert!(!err.to_string().contains("sk-hidden"));
}

fn tempfile_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ferry-config-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn a_cluster_is_named_by_its_seeds_and_never_beside_redis_url() {
    let c = load(&[(
        "REDIS_CLUSTER_NODES",
        "10.0.0.1:6379, redis://:pw@10.0.0.2:6379,rediss://10.0.0.3:6380",
    )])
    .unwrap();
    let RedisTarget::Cluster(seeds) = &c.redis else {
        panic!("a cluster target");
    };
    let seeds: Vec<&str> = seeds.iter().map(|s| s.expose()).collect();
    assert_eq!(
        seeds,
        [
            "redis://10.0.0.1:6379",
            "redis://:pw@10.0.0.2:6379",
            "rediss://10.0.0.3:6380"
        ]
    );
    assert!(!c.redis_redacted().contains("pw"), "{}", c.redis_redacted());
    assert_eq!(
        c.ingress.durable_ack,
        DurableAck::Replica,
        "a cluster waits for a replica by default"
    );
    assert_eq!(load(&[]).unwrap().ingress.durable_ack, DurableAck::None);
    for (vars, named) in [
        (
            &[("REDIS_URL", "redis://h:1"), ("REDIS_CLUSTER_NODES", "h:1")][..],
            "REDIS_CLUSTER_NODES",
        ),
        (
            &[("REDIS_CLUSTER_NODES", "not a node")][..],
            "REDIS_CLUSTER_NODES",
        ),
        (&[("REDIS_CLUSTER_NODES", " , ")][..], "REDIS_CLUSTER_NODES"),
        (&[("FERRY_DURABLE_ACK", "always")][..], "FERRY_DURABLE_ACK"),
        (
            &[("FERRY_QUEUE_PARTITIONS", "mail=3")][..],
            "FERRY_QUEUE_PARTITIONS",
        ),
    ] {
        let e = load(vars).unwrap_err().to_string();
        assert!(e.starts_with(named), "{vars:?}: {e}");
    }
    let c = load(&[("FERRY_QUEUE_PARTITIONS", "wechat=6,batch=2")]).unwrap();
    assert_eq!(c.queue.partitions.count("wechat"), 6);
}
