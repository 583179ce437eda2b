// A page expression: the name of the bot check the page shows, or null (see
// driver/challenge.rs). Evaluated as it is, in the page.
(() => {
  const checks = [
    ["Cloudflare", ["challenges.cloudflare.com", "/cdn-cgi/challenge-platform/"]],
    ["hCaptcha", ["hcaptcha.com"]],
    ["reCAPTCHA", ["google.com/recaptcha", "recaptcha.net", "gstatic.com/recaptcha"]],
    ["Arkose Labs", ["arkoselabs.com", "funcaptcha.com"]],
    ["DataDome", ["captcha-delivery.com"]],
    ["AWS WAF", ["awswaf.com"]],
  ];
  const sources = [...document.querySelectorAll("iframe[src], script[src]")].map((e) => e.src);
  for (const [name, hosts] of checks) {
    if (sources.some((src) => hosts.some((h) => src.includes(h)))) return name;
  }
  if (document.querySelector("#px-captcha")) return "HUMAN (PerimeterX)";
  if (document.querySelector("#challenge-form, #challenge-running") || document.title === "Just a moment...") return "Cloudflare";
  return null;
})()
